/* The bench server's memory: namespaces, documents indexed by _id, equality filters, scans and cursors.
 * Documents are kept as raw BSON and copied out under a collection's read lock; a collection is never
 * freed (drop empties it), so a pointer to one stays valid without reference counting. */
#include "benchserver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- canonical keys ---- */

typedef struct {
   uint8_t *out;
   size_t cap;
   size_t n;
} keywriter_t;

static void
kw_put (keywriter_t *w, const void *p, size_t len)
{
   if (len && w->n + len <= w->cap) {
      memcpy (w->out + w->n, p, len);
   }
   w->n += len;
}

static void
kw_byte (keywriter_t *w, uint8_t b)
{
   kw_put (w, &b, 1);
}

static void
kw_int64 (keywriter_t *w, uint8_t cls, int64_t v)
{
   uint64_t u = (uint64_t) v;
   uint8_t le[8];
   for (int i = 0; i < 8; i++) {
      le[i] = (uint8_t) (u >> (8 * i));
   }
   kw_byte (w, cls);
   kw_put (w, le, 8);
}

/* MongoDB compares numbers by value, so 1, 1L and 1.0 must be the same _id. Integral doubles in range
 * share the int64 encoding; other doubles keep their bits. */
#define CLS_INT 0x12
#define CLS_DOUBLE 0x01
#define CLS_STRING 0x02

size_t
amongo_key_encode (const bson_iter_t *it, uint8_t *out, size_t cap)
{
   keywriter_t w = {out, cap, 0};
   uint32_t len = 0;

   switch (bson_iter_type (it)) {
   case BSON_TYPE_INT32:
      kw_int64 (&w, CLS_INT, bson_iter_int32 (it));
      break;
   case BSON_TYPE_INT64:
      kw_int64 (&w, CLS_INT, bson_iter_int64 (it));
      break;
   case BSON_TYPE_DOUBLE: {
      double d = bson_iter_double (it);
      if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && (double) (int64_t) d == d) {
         kw_int64 (&w, CLS_INT, (int64_t) d);
      } else {
         int64_t bits;
         memcpy (&bits, &d, sizeof bits);
         kw_int64 (&w, CLS_DOUBLE, bits);
      }
      break;
   }
   case BSON_TYPE_UTF8: {
      const char *s = bson_iter_utf8 (it, &len);
      kw_byte (&w, CLS_STRING);
      kw_put (&w, s, len);
      break;
   }
   case BSON_TYPE_SYMBOL: {
      const char *s = bson_iter_symbol (it, &len);
      kw_byte (&w, CLS_STRING);
      kw_put (&w, s, len);
      break;
   }
   case BSON_TYPE_DOCUMENT:
   case BSON_TYPE_ARRAY: {
      const uint8_t *data = NULL;
      if (bson_iter_type (it) == BSON_TYPE_DOCUMENT) {
         bson_iter_document (it, &len, &data);
      } else {
         bson_iter_array (it, &len, &data);
      }
      kw_byte (&w, (uint8_t) bson_iter_type (it));
      kw_put (&w, data, data ? len : 0);
      break;
   }
   case BSON_TYPE_BINARY: {
      bson_subtype_t sub;
      const uint8_t *data = NULL;
      bson_iter_binary (it, &sub, &len, &data);
      kw_byte (&w, BSON_TYPE_BINARY);
      kw_byte (&w, (uint8_t) sub);
      kw_put (&w, data, data ? len : 0);
      break;
   }
   case BSON_TYPE_OID:
      kw_byte (&w, BSON_TYPE_OID);
      kw_put (&w, bson_iter_oid (it)->bytes, 12);
      break;
   case BSON_TYPE_BOOL:
      kw_byte (&w, BSON_TYPE_BOOL);
      kw_byte (&w, bson_iter_bool (it) ? 1 : 0);
      break;
   case BSON_TYPE_DATE_TIME:
      kw_int64 (&w, BSON_TYPE_DATE_TIME, bson_iter_date_time (it));
      break;
   case BSON_TYPE_TIMESTAMP: {
      uint32_t ts, inc;
      bson_iter_timestamp (it, &ts, &inc);
      kw_int64 (&w, BSON_TYPE_TIMESTAMP, (int64_t) (((uint64_t) ts << 32) | inc));
      break;
   }
   case BSON_TYPE_DECIMAL128: {
      bson_decimal128_t dec;
      bson_iter_decimal128 (it, &dec);
      kw_byte (&w, BSON_TYPE_DECIMAL128);
      kw_put (&w, &dec.low, 8);
      kw_put (&w, &dec.high, 8);
      break;
   }
   case BSON_TYPE_REGEX: {
      const char *opts = NULL;
      const char *re = bson_iter_regex (it, &opts);
      kw_byte (&w, BSON_TYPE_REGEX);
      kw_put (&w, re, strlen (re) + 1);
      kw_put (&w, opts, strlen (opts) + 1);
      break;
   }
   case BSON_TYPE_DBPOINTER: {
      const char *coll = NULL;
      const bson_oid_t *oid = NULL;
      bson_iter_dbpointer (it, &len, &coll, &oid);
      kw_byte (&w, BSON_TYPE_DBPOINTER);
      kw_put (&w, coll, coll ? len : 0);
      kw_byte (&w, 0);
      if (oid) {
         kw_put (&w, oid->bytes, 12);
      }
      break;
   }
   case BSON_TYPE_CODE: {
      const char *code = bson_iter_code (it, &len);
      kw_byte (&w, BSON_TYPE_CODE);
      kw_put (&w, code, code ? len : 0);
      break;
   }
   case BSON_TYPE_CODEWSCOPE: {
      uint32_t scope_len = 0;
      const uint8_t *scope = NULL;
      const char *code = bson_iter_codewscope (it, &len, &scope_len, &scope);
      kw_byte (&w, BSON_TYPE_CODEWSCOPE);
      kw_put (&w, code, code ? len : 0);
      kw_byte (&w, 0);
      kw_put (&w, scope, scope ? scope_len : 0);
      break;
   }
   case BSON_TYPE_EOD:
   case BSON_TYPE_UNDEFINED:
   case BSON_TYPE_NULL:
   case BSON_TYPE_MINKEY:
   case BSON_TYPE_MAXKEY:
   default:
      kw_byte (&w, (uint8_t) bson_iter_type (it));
      break;
   }
   return w.n;
}

uint64_t
amongo_key_hash (const uint8_t *key, size_t len)
{
   uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a final mix so low bits index well */
   for (size_t i = 0; i < len; i++) {
      h ^= key[i];
      h *= 1099511628211ULL;
   }
   h ^= h >> 33;
   h *= 0xff51afd7ed558ccdULL;
   h ^= h >> 33;
   return h;
}

/* ---- records ---- */

static amongo_rec_t *
rec_from_id (const bson_iter_t *id, const uint8_t *doc, uint32_t len, int *code)
{
   size_t keylen = amongo_key_encode (id, NULL, 0);
   amongo_rec_t *r = malloc (sizeof *r + keylen + len);
   if (!r) {
      *code = AMONGO_ERR_OUT_OF_MEMORY;
      return NULL;
   }
   amongo_key_encode (id, r->data, keylen);
   memcpy (r->data + keylen, doc, len);
   r->keylen = (uint32_t) keylen;
   r->doclen = len;
   r->hash = amongo_key_hash (r->data, keylen);
   r->pos = 0;
   return r;
}

/* libbson's validation and JSON conversion recurse once per nesting level, and connection threads have
 * small stacks: measure the depth first, iteratively. MongoDB stores at most 100 levels too. */
bool
amongo_depth_ok (const bson_t *doc, int max_depth)
{
   struct {
      bson_iter_t it; /* bson_iter_t is over-aligned: an array of it needs this wrapper */
   } stack[AMONGO_MAX_DEPTH + 1];
   int depth = 0;
   if (max_depth > AMONGO_MAX_DEPTH || !bson_iter_init (&stack[0].it, doc)) {
      return false;
   }
   for (;;) {
      bson_iter_t *it = &stack[depth].it;
      if (!bson_iter_next (it)) {
         if (depth == 0) {
            return true;
         }
         depth--;
         continue;
      }
      bson_t scope;
      bool nested = BSON_ITER_HOLDS_DOCUMENT (it) || BSON_ITER_HOLDS_ARRAY (it) || BSON_ITER_HOLDS_CODEWSCOPE (it);
      if (!nested) {
         continue;
      }
      if (depth == max_depth) {
         return false;
      }
      if (BSON_ITER_HOLDS_CODEWSCOPE (it)) {
         uint32_t code_len, scope_len;
         const uint8_t *scope_data;
         bson_iter_codewscope (it, &code_len, &scope_len, &scope_data);
         if (!scope_data || !bson_init_static (&scope, scope_data, scope_len) ||
             !bson_iter_init (&stack[depth + 1].it, &scope)) {
            return false;
         }
      } else if (!bson_iter_recurse (it, &stack[depth + 1].it)) {
         return false;
      }
      depth++;
   }
}

amongo_rec_t *
amongo_rec_new (const uint8_t *doc, uint32_t len, int *code)
{
   bson_t b;
   bson_iter_t it;
   size_t err_offset;

   if (len > AMONGO_MAX_BSON_SIZE) {
      *code = AMONGO_ERR_OBJECT_TOO_LARGE;
      return NULL;
   }
   /* Stored documents are later copied into replies and walked by filters: refuse broken ones here,
    * as MongoDB does, so nothing downstream sees them. */
   if (!bson_init_static (&b, doc, len) || !amongo_depth_ok (&b, AMONGO_MAX_DEPTH) ||
       !bson_validate (&b, BSON_VALIDATE_NONE, &err_offset)) {
      *code = AMONGO_ERR_BAD_VALUE;
      return NULL;
   }
   if (bson_iter_init_find (&it, &b, "_id")) {
      return rec_from_id (&it, doc, len, code);
   }

   bson_t with;
   bson_oid_t oid;
   amongo_rec_t *r = NULL;
   bson_init (&with);
   bson_oid_init (&oid, NULL);
   if (!BSON_APPEND_OID (&with, "_id", &oid) || !bson_concat (&with, &b) ||
       with.len > AMONGO_MAX_BSON_SIZE) {
      *code = AMONGO_ERR_OBJECT_TOO_LARGE;
   } else if (bson_iter_init_find (&it, &with, "_id")) {
      r = rec_from_id (&it, bson_get_data (&with), with.len, code);
   } else {
      *code = AMONGO_ERR_BAD_VALUE;
   }
   bson_destroy (&with);
   return r;
}

/* ---- a collection's documents and _id index (caller holds the lock) ---- */

static amongo_rec_t tombstone;
#define TOMBSTONE (&tombstone)

static int
index_resize_locked (amongo_coll_t *c, size_t newcap)
{
   amongo_rec_t **idx = calloc (newcap, sizeof *idx);
   if (!idx) {
      return -1;
   }
   size_t mask = newcap - 1;
   for (size_t i = 0; i < c->index_cap; i++) {
      amongo_rec_t *r = c->index[i];
      if (r && r != TOMBSTONE) {
         size_t j = r->hash & mask;
         while (idx[j]) {
            j = (j + 1) & mask;
         }
         idx[j] = r;
      }
   }
   free (c->index);
   c->index = idx;
   c->index_cap = newcap;
   c->index_used = c->live;
   return 0;
}

amongo_rec_t *
amongo_coll_find_id_locked (amongo_coll_t *c, const uint8_t *key, size_t keylen, uint64_t hash)
{
   if (!c->index_cap) {
      return NULL;
   }
   size_t mask = c->index_cap - 1;
   /* Terminates: the load factor (tombstones included) stays below 3/4, so an empty slot exists. */
   for (size_t i = hash & mask;; i = (i + 1) & mask) {
      amongo_rec_t *r = c->index[i];
      if (!r) {
         return NULL;
      }
      if (r != TOMBSTONE && r->hash == hash && r->keylen == keylen && !memcmp (r->data, key, keylen)) {
         return r;
      }
   }
}

int
amongo_coll_insert_locked (amongo_coll_t *c, amongo_rec_t *rec)
{
   if ((c->index_used + 1) * 4 > c->index_cap * 3) {
      size_t newcap = c->index_cap ? c->index_cap : 16;
      while ((c->live + 1) * 2 > newcap) {
         newcap *= 2;
      }
      if (index_resize_locked (c, newcap) < 0) {
         return -1;
      }
   }
   if (c->ndocs == c->cap) {
      size_t newcap = c->cap ? c->cap * 2 : 64;
      amongo_rec_t **docs = realloc (c->docs, newcap * sizeof *docs);
      if (!docs) {
         return -1;
      }
      c->docs = docs;
      c->cap = newcap;
   }

   size_t mask = c->index_cap - 1;
   size_t i = rec->hash & mask;
   ssize_t reuse = -1;
   for (;; i = (i + 1) & mask) {
      amongo_rec_t *r = c->index[i];
      if (!r) {
         break;
      }
      if (r == TOMBSTONE) {
         if (reuse < 0) {
            reuse = (ssize_t) i;
         }
      } else if (r->hash == rec->hash && r->keylen == rec->keylen &&
                 !memcmp (r->data, rec->data, rec->keylen)) {
         return 1;
      }
   }
   if (reuse >= 0) {
      i = (size_t) reuse;
   } else {
      c->index_used++;
   }
   c->index[i] = rec;
   rec->pos = c->ndocs;
   c->docs[c->ndocs++] = rec;
   c->live++;
   c->bytes += rec->doclen;
   return 0;
}

void
amongo_coll_remove_locked (amongo_coll_t *c, amongo_rec_t *rec)
{
   size_t mask = c->index_cap - 1;
   for (size_t i = rec->hash & mask; c->index[i]; i = (i + 1) & mask) {
      if (c->index[i] == rec) {
         c->index[i] = TOMBSTONE;
         break;
      }
   }
   c->docs[rec->pos] = NULL;
   c->live--;
   c->bytes -= rec->doclen;
   free (rec);
}

void
amongo_coll_clear_locked (amongo_coll_t *c)
{
   for (size_t i = 0; i < c->ndocs; i++) {
      free (c->docs[i]);
   }
   free (c->docs);
   free (c->index);
   c->docs = NULL;
   c->index = NULL;
   c->ndocs = c->cap = c->live = 0;
   c->index_cap = c->index_used = 0;
   c->bytes = 0;
}

/* ---- namespaces ---- */

#define NS_BUCKETS 256

/* Guards the table's chains only; each collection has its own lock. Entries are never removed. */
static pthread_rwlock_t ns_lock = PTHREAD_RWLOCK_INITIALIZER;
static amongo_coll_t *ns_table[NS_BUCKETS];

int
amongo_ns_check (const char *db, const char *coll, char *err, size_t errlen)
{
   size_t dl = strlen (db), cl = strlen (coll);
   if (!dl || dl > AMONGO_MAX_DB || strpbrk (db, "./\\ \"$")) {
      snprintf (err, errlen, "Invalid database name: '%s'", db);
      return AMONGO_ERR_INVALID_NAMESPACE;
   }
   if (!cl || dl + 1 + cl > AMONGO_MAX_NS || strchr (coll, '$')) {
      snprintf (err, errlen, "Invalid collection name: '%s'", coll);
      return AMONGO_ERR_INVALID_NAMESPACE;
   }
   return 0;
}

static amongo_coll_t *
ns_find (const char *ns, size_t bucket)
{
   for (amongo_coll_t *c = ns_table[bucket]; c; c = c->next) {
      if (!strcmp (c->ns, ns)) {
         return c;
      }
   }
   return NULL;
}

amongo_coll_t *
amongo_ns_get (const char *db, const char *coll, bool create)
{
   char ns[AMONGO_MAX_NS + 2];
   int n = snprintf (ns, sizeof ns, "%s.%s", db, coll);
   if (n < 0 || (size_t) n > AMONGO_MAX_NS) {
      return NULL;
   }
   size_t bucket = amongo_key_hash ((const uint8_t *) ns, (size_t) n) % NS_BUCKETS;

   pthread_rwlock_rdlock (&ns_lock);
   amongo_coll_t *c = ns_find (ns, bucket);
   pthread_rwlock_unlock (&ns_lock);
   if (c || !create) {
      return c;
   }

   pthread_rwlock_wrlock (&ns_lock);
   c = ns_find (ns, bucket);
   if (!c) {
      c = calloc (1, sizeof *c);
      if (c && !(c->ns = strdup (ns))) {
         free (c);
         c = NULL;
      }
      if (c && pthread_rwlock_init (&c->lock, NULL) != 0) {
         free (c->ns);
         free (c);
         c = NULL;
      }
      if (c) {
         c->dblen = strlen (db);
         c->next = ns_table[bucket];
         ns_table[bucket] = c;
      }
   }
   pthread_rwlock_unlock (&ns_lock);
   return c;
}

void
amongo_ns_foreach (void (*fn) (amongo_coll_t *, void *), void *arg)
{
   pthread_rwlock_rdlock (&ns_lock);
   for (size_t b = 0; b < NS_BUCKETS; b++) {
      for (amongo_coll_t *c = ns_table[b]; c; c = c->next) {
         fn (c, arg);
      }
   }
   pthread_rwlock_unlock (&ns_lock);
}

/* ---- filters ---- */

void
amongo_matcher_destroy (amongo_matcher_t *m)
{
   for (size_t i = 0; i < m->nterms; i++) {
      free (m->terms[i].name);
      free (m->terms[i].key);
   }
   free (m->terms);
   m->terms = NULL;
   m->nterms = 0;
   m->id_term = -1;
}

int
amongo_matcher_compile (amongo_matcher_t *m, const bson_t *filter, char *err, size_t errlen)
{
   bson_iter_t it;
   memset (m, 0, sizeof *m);
   m->id_term = -1;
   if (!filter || bson_empty (filter)) {
      return 0;
   }
   if (!bson_iter_init (&it, filter)) {
      snprintf (err, errlen, "invalid filter document");
      return AMONGO_ERR_BAD_VALUE;
   }
   m->terms = calloc (bson_count_keys (filter), sizeof *m->terms);
   if (!m->terms) {
      snprintf (err, errlen, "out of memory");
      return AMONGO_ERR_OUT_OF_MEMORY;
   }
   while (bson_iter_next (&it)) {
      const char *name = bson_iter_key (&it);
      bson_iter_t val = it;
      if (name[0] == '$' || strchr (name, '.')) {
         snprintf (err, errlen, "benchserver supports only top-level equality filters, not '%s'", name);
         goto fail;
      }
      if (BSON_ITER_HOLDS_DOCUMENT (&it)) {
         bson_iter_t sub;
         if (bson_iter_recurse (&it, &sub) && bson_iter_next (&sub) && bson_iter_key (&sub)[0] == '$') {
            const char *op = bson_iter_key (&sub);
            bson_iter_t after = sub;
            if (strcmp (op, "$eq") != 0 || bson_iter_next (&after)) {
               snprintf (err, errlen, "benchserver supports only equality filters, not '%s'", op);
               goto fail;
            }
            val = sub;
         }
      }
      if (BSON_ITER_HOLDS_REGEX (&val)) {
         snprintf (err, errlen, "benchserver does not match regular expressions");
         goto fail;
      }
      amongo_term_t *t = &m->terms[m->nterms];
      t->keylen = amongo_key_encode (&val, NULL, 0);
      t->name = strdup (name);
      t->key = malloc (t->keylen);
      if (!t->name || !t->key) {
         free (t->name);
         free (t->key);
         snprintf (err, errlen, "out of memory");
         amongo_matcher_destroy (m);
         return AMONGO_ERR_OUT_OF_MEMORY;
      }
      amongo_key_encode (&val, t->key, t->keylen);
      t->hash = amongo_key_hash (t->key, t->keylen);
      t->is_null = BSON_ITER_HOLDS_NULL (&val);
      if (m->id_term < 0 && !strcmp (name, "_id")) {
         m->id_term = (ssize_t) m->nterms;
      }
      m->nterms++;
   }
   return 0;
fail:
   amongo_matcher_destroy (m);
   return AMONGO_ERR_BAD_VALUE;
}

bool
amongo_matcher_match (const amongo_matcher_t *m, const bson_t *doc)
{
   for (size_t i = 0; i < m->nterms; i++) {
      const amongo_term_t *t = &m->terms[i];
      bson_iter_t it;
      if (!bson_iter_init_find (&it, doc, t->name)) {
         if (t->is_null) {
            continue;
         }
         return false;
      }
      uint8_t buf[256];
      size_t len = amongo_key_encode (&it, buf, sizeof buf);
      if (len != t->keylen) {
         return false;
      }
      if (len <= sizeof buf) {
         if (memcmp (buf, t->key, len)) {
            return false;
         }
         continue;
      }
      uint8_t *big = malloc (len);
      if (!big) {
         return false; /* cannot compare: counted as a non-match rather than a crash */
      }
      amongo_key_encode (&it, big, len);
      bool same = !memcmp (big, t->key, len);
      free (big);
      if (!same) {
         return false;
      }
   }
   return true;
}

/* ---- scans ---- */

void
amongo_scan_init (amongo_scan_t *s, amongo_coll_t *coll, int64_t skip, int64_t limit)
{
   memset (s, 0, sizeof *s);
   s->coll = coll;
   s->m.id_term = -1;
   s->skip = skip;
   s->limit_left = limit > 0 ? limit : -1;
}

void
amongo_scan_destroy (amongo_scan_t *s)
{
   amongo_matcher_destroy (&s->m);
}

/* Calls take(doc) for each document the scan yields, until take returns false. Holds the read lock. */
typedef bool (*take_fn) (void *ctx, const bson_t *doc, uint32_t doclen);

static int64_t
scan_run (amongo_scan_t *s, take_fn take, void *ctx, int *code)
{
   int64_t n = 0;
   if (s->done) {
      return 0;
   }
   if (!s->coll) {
      s->done = true;
      return 0;
   }
   amongo_coll_t *c = s->coll;
   pthread_rwlock_rdlock (&c->lock);
   if (!s->started) {
      s->generation = c->generation;
      s->started = true;
   } else if (s->generation != c->generation) {
      pthread_rwlock_unlock (&c->lock);
      *code = AMONGO_ERR_QUERY_PLAN_KILLED;
      return -1;
   }

   if (s->m.id_term >= 0) {
      const amongo_term_t *t = &s->m.terms[s->m.id_term];
      amongo_rec_t *r = amongo_coll_find_id_locked (c, t->key, t->keylen, t->hash);
      bson_t doc;
      /* At most one candidate, so the scan is over once it has been taken, skipped or refused. */
      if (!r || !bson_init_static (&doc, AMONGO_REC_DOC (r), r->doclen) ||
          !amongo_matcher_match (&s->m, &doc) || s->limit_left == 0) {
         s->done = true;
      } else if (s->skip > 0) {
         s->skip--;
         s->done = true;
      } else if (take (ctx, &doc, r->doclen)) {
         n++;
         if (s->limit_left > 0) {
            s->limit_left--;
         }
         s->done = true;
      } else if (*code) {
         goto fail;
      }
      /* else the batch was full (batchSize 0): the next getMore looks again */
      pthread_rwlock_unlock (&c->lock);
      return n;
   }

   while (s->pos < c->ndocs && s->limit_left != 0) {
      amongo_rec_t *r = c->docs[s->pos];
      bson_t doc;
      if (!r || !bson_init_static (&doc, AMONGO_REC_DOC (r), r->doclen) ||
          (s->m.nterms && !amongo_matcher_match (&s->m, &doc))) {
         s->pos++;
         continue;
      }
      if (s->skip > 0) {
         s->skip--;
         s->pos++;
         continue;
      }
      if (!take (ctx, &doc, r->doclen)) {
         if (*code) {
            goto fail;
         }
         break;
      }
      n++;
      s->pos++;
      if (s->limit_left > 0) {
         s->limit_left--;
      }
   }
   while (s->pos < c->ndocs && !c->docs[s->pos]) {
      s->pos++;
   }
   if (s->pos >= c->ndocs || s->limit_left == 0) {
      s->done = true;
   }
   pthread_rwlock_unlock (&c->lock);
   return n;
fail:
   pthread_rwlock_unlock (&c->lock);
   return -1;
}

typedef struct {
   bson_t *arr;
   uint32_t *key;
   int64_t max_docs;
   int64_t n;
   size_t bytes;
   int *code;
} fill_ctx_t;

static bool
fill_take (void *ctx, const bson_t *doc, uint32_t doclen)
{
   fill_ctx_t *f = ctx;
   if (f->max_docs >= 0 && f->n >= f->max_docs) {
      return false;
   }
   if (f->n > 0 && f->bytes + doclen > AMONGO_BATCH_BYTES) {
      return false;
   }
   char buf[16];
   const char *k;
   size_t kl = bson_uint32_to_string (*f->key, &k, buf, sizeof buf);
   if (!bson_append_document (f->arr, k, (int) kl, doc)) {
      *f->code = AMONGO_ERR_OBJECT_TOO_LARGE;
      return false;
   }
   (*f->key)++;
   f->n++;
   f->bytes += doclen;
   return true;
}

int64_t
amongo_scan_fill (amongo_scan_t *s, bson_t *arr, uint32_t *key, int64_t max_docs, int *code)
{
   fill_ctx_t f = {arr, key, max_docs, 0, 0, code};
   *code = 0;
   return scan_run (s, fill_take, &f, code);
}

static bool
count_take (void *ctx, const bson_t *doc, uint32_t doclen)
{
   (void) ctx;
   (void) doc;
   (void) doclen;
   return true;
}

int64_t
amongo_scan_count (amongo_scan_t *s, int *code)
{
   *code = 0;
   return scan_run (s, count_take, NULL, code);
}

/* ---- cursors ---- */

#define CURSOR_BUCKETS 1024
#define CURSOR_IDLE_MS (10 * 60 * 1000)

/* Guards the table and the counters below. A cursor taken out of the table belongs to one thread. */
static pthread_mutex_t cursor_lock = PTHREAD_MUTEX_INITIALIZER;
static amongo_cursor_t *cursor_table[CURSOR_BUCKETS];
static size_t cursor_count;
static int64_t cursor_next_id;
static int64_t cursor_last_sweep;

static int64_t
now_ms (void)
{
   struct timespec ts;
   clock_gettime (CLOCK_MONOTONIC, &ts);
   return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
amongo_cursor_free (amongo_cursor_t *c)
{
   if (c) {
      amongo_scan_destroy (&c->scan);
      free (c);
   }
}

/* Drivers kill what they abandon, but a client that dies cannot: forget cursors idle for ten minutes,
 * as mongod does. */
static void
cursor_sweep_locked (int64_t now)
{
   for (size_t b = 0; b < CURSOR_BUCKETS; b++) {
      amongo_cursor_t **pp = &cursor_table[b];
      while (*pp) {
         amongo_cursor_t *c = *pp;
         if (now - c->last_used > CURSOR_IDLE_MS) {
            *pp = c->next;
            cursor_count--;
            amongo_cursor_free (c);
         } else {
            pp = &c->next;
         }
      }
   }
   cursor_last_sweep = now;
}

static void
cursor_insert_locked (amongo_cursor_t *c)
{
   size_t b = (uint64_t) c->id % CURSOR_BUCKETS;
   c->next = cursor_table[b];
   cursor_table[b] = c;
   cursor_count++;
}

int64_t
amongo_cursor_register (amongo_cursor_t *c)
{
   int64_t now = now_ms ();
   c->last_used = now;
   pthread_mutex_lock (&cursor_lock);
   if (cursor_count > 1024 && now - cursor_last_sweep > 10000) {
      cursor_sweep_locked (now);
   }
   c->id = cursor_next_id++;
   cursor_insert_locked (c);
   pthread_mutex_unlock (&cursor_lock);
   return c->id;
}

amongo_cursor_t *
amongo_cursor_take (int64_t id)
{
   amongo_cursor_t *found = NULL;
   pthread_mutex_lock (&cursor_lock);
   for (amongo_cursor_t **pp = &cursor_table[(uint64_t) id % CURSOR_BUCKETS]; *pp; pp = &(*pp)->next) {
      if ((*pp)->id == id) {
         found = *pp;
         *pp = found->next;
         cursor_count--;
         break;
      }
   }
   pthread_mutex_unlock (&cursor_lock);
   return found;
}

void
amongo_cursor_put (amongo_cursor_t *c)
{
   c->last_used = now_ms ();
   pthread_mutex_lock (&cursor_lock);
   cursor_insert_locked (c);
   pthread_mutex_unlock (&cursor_lock);
}

int
amongo_store_init (void)
{
   struct timespec ts;
   clock_gettime (CLOCK_REALTIME, &ts);
   /* Ids above 2^32 so a driver that truncates cursor ids to 32 bits fails visibly. */
   cursor_next_id = ((int64_t) 1 << 40) + ((int64_t) ts.tv_nsec & 0xffffff);
   cursor_last_sweep = now_ms ();
   return 0;
}
