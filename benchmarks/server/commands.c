/* The commands the bench server answers, each a function from a parsed request to a reply document.
 * What a benchmark needs is implemented; anything else (operators, sorting, projections, updates) is
 * refused with an error, so a measurement can never silently rely on a wrong answer. */
#include "benchserver.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

typedef struct {
   const amongo_request_t *req;
   const char *name;
   bson_iter_t first; /* the command's first element: its name and main argument */
   bson_t *reply;
} cmd_t;

/* ---- replies ---- */

static const char *
code_name (int code)
{
   switch (code) {
   case AMONGO_ERR_BAD_VALUE: return "BadValue";
   case AMONGO_ERR_FAILED_TO_PARSE: return "FailedToParse";
   case AMONGO_ERR_TYPE_MISMATCH: return "TypeMismatch";
   case AMONGO_ERR_INVALID_LENGTH: return "InvalidLength";
   case AMONGO_ERR_CURSOR_NOT_FOUND: return "CursorNotFound";
   case AMONGO_ERR_NAMESPACE_EXISTS: return "NamespaceExists";
   case AMONGO_ERR_COMMAND_NOT_FOUND: return "CommandNotFound";
   case AMONGO_ERR_INVALID_NAMESPACE: return "InvalidNamespace";
   case AMONGO_ERR_OUT_OF_MEMORY: return "ExceededMemoryLimit";
   case AMONGO_ERR_QUERY_PLAN_KILLED: return "QueryPlanKilled";
   case AMONGO_ERR_UNSUPPORTED_OP_QUERY: return "UnsupportedOpQueryCommand";
   case AMONGO_ERR_OBJECT_TOO_LARGE: return "BSONObjectTooLarge";
   case AMONGO_ERR_DUPLICATE_KEY: return "DuplicateKey";
   default: return "UnknownError";
   }
}

static void BSON_GNUC_PRINTF (3, 4)
reply_error (bson_t *reply, int code, const char *fmt, ...)
{
   char msg[512];
   va_list ap;
   va_start (ap, fmt);
   vsnprintf (msg, sizeof msg, fmt, ap);
   va_end (ap);
   bson_reinit (reply);
   BSON_APPEND_DOUBLE (reply, "ok", 0.0);
   BSON_APPEND_UTF8 (reply, "errmsg", msg);
   BSON_APPEND_INT32 (reply, "code", code);
   BSON_APPEND_UTF8 (reply, "codeName", code_name (code));
}

static void
reply_ok (bson_t *reply)
{
   BSON_APPEND_DOUBLE (reply, "ok", 1.0);
}

static void
append_count (bson_t *b, const char *key, int64_t n)
{
   if (n <= INT32_MAX) {
      BSON_APPEND_INT32 (b, key, (int32_t) n);
   } else {
      BSON_APPEND_INT64 (b, key, n);
   }
}

/* ---- arguments ---- */

static bool
iter_int64 (const bson_iter_t *it, int64_t *out)
{
   switch (bson_iter_type (it)) {
   case BSON_TYPE_INT32:
      *out = bson_iter_int32 (it);
      return true;
   case BSON_TYPE_INT64:
      *out = bson_iter_int64 (it);
      return true;
   case BSON_TYPE_DOUBLE: {
      double d = bson_iter_double (it);
      if (d >= -9.2e18 && d <= 9.2e18 && (double) (int64_t) d == d) {
         *out = (int64_t) d;
         return true;
      }
      return false;
   }
   default:
      return false;
   }
}

/* A UTF-8 value without embedded NULs, or NULL. */
static const char *
iter_cstring (const bson_iter_t *it)
{
   uint32_t len;
   if (!BSON_ITER_HOLDS_UTF8 (it)) {
      return NULL;
   }
   const char *s = bson_iter_utf8 (it, &len);
   return strlen (s) == len ? s : NULL;
}

/* Optional integer field: 0 if absent or valid (*out set), -1 after replying with an error. */
static int
opt_int64 (cmd_t *c, const char *key, int64_t min, int64_t *out)
{
   bson_iter_t it;
   if (!bson_iter_init_find (&it, &c->req->body, key) || BSON_ITER_HOLDS_NULL (&it)) {
      return 0;
   }
   int64_t v;
   if (!iter_int64 (&it, &v)) {
      reply_error (c->reply, AMONGO_ERR_TYPE_MISMATCH, "BSON field '%s.%s' must be a number", c->name, key);
      return -1;
   }
   if (v < min) {
      reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "BSON field '%s.%s' must be >= %lld", c->name, key,
                   (long long) min);
      return -1;
   }
   *out = v;
   return 0;
}

static int
opt_bool (cmd_t *c, const char *key, bool *out)
{
   bson_iter_t it;
   if (bson_iter_init_find (&it, &c->req->body, key)) {
      if (!BSON_ITER_HOLDS_BOOL (&it) && !BSON_ITER_HOLDS_NUMBER (&it)) {
         reply_error (c->reply, AMONGO_ERR_TYPE_MISMATCH, "BSON field '%s.%s' must be a boolean", c->name, key);
         return -1;
      }
      *out = bson_iter_as_bool (&it);
   }
   return 0;
}

/* Optional sub-document in body (or in `in`): 0 with *present, -1 after replying with an error. */
static int
opt_doc_in (cmd_t *c, const bson_t *in, const char *key, bson_t *out, bool *present)
{
   bson_iter_t it;
   *present = false;
   if (!bson_iter_init_find (&it, in, key) || BSON_ITER_HOLDS_NULL (&it)) {
      return 0;
   }
   uint32_t len;
   const uint8_t *data;
   if (!BSON_ITER_HOLDS_DOCUMENT (&it)) {
      reply_error (c->reply, AMONGO_ERR_TYPE_MISMATCH, "BSON field '%s' must be an object", key);
      return -1;
   }
   bson_iter_document (&it, &len, &data);
   if (!bson_init_static (out, data, len)) {
      reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "BSON field '%s' is not a valid document", key);
      return -1;
   }
   *present = true;
   return 0;
}

static int
opt_doc (cmd_t *c, const char *key, bson_t *out, bool *present)
{
   return opt_doc_in (c, &c->req->body, key, out, present);
}

/* The collection named by the command's first element. */
static int
arg_coll (cmd_t *c, const char **coll)
{
   char err[300];
   *coll = iter_cstring (&c->first);
   if (!*coll) {
      reply_error (c->reply, AMONGO_ERR_INVALID_NAMESPACE, "collection name must be a string");
      return -1;
   }
   int code = amongo_ns_check (c->req->db, *coll, err, sizeof err);
   if (code) {
      reply_error (c->reply, code, "%s", err);
      return -1;
   }
   return 0;
}

/* ---- handshake and trivia ---- */

static void
cmd_hello (cmd_t *c)
{
   bson_iter_t it;
   struct timeval tv;
   bool hello_ok = bson_iter_init_find (&it, &c->req->body, "helloOk") && bson_iter_as_bool (&it);

   gettimeofday (&tv, NULL);
   if (hello_ok) {
      BSON_APPEND_BOOL (c->reply, "helloOk", true);
   }
   /* A standalone: no setName, no topologyVersion (so monitors poll instead of streaming). */
   BSON_APPEND_BOOL (c->reply, strcmp (c->name, "hello") ? "ismaster" : "isWritablePrimary", true);
   BSON_APPEND_INT32 (c->reply, "maxBsonObjectSize", AMONGO_MAX_BSON_SIZE);
   BSON_APPEND_INT32 (c->reply, "maxMessageSizeBytes", AMONGO_MAX_MESSAGE_SIZE);
   BSON_APPEND_INT32 (c->reply, "maxWriteBatchSize", AMONGO_MAX_WRITE_BATCH);
   BSON_APPEND_DATE_TIME (c->reply, "localTime", (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000);
   BSON_APPEND_INT32 (c->reply, "logicalSessionTimeoutMinutes", 30);
   BSON_APPEND_INT32 (c->reply, "connectionId", c->req->connection_id);
   BSON_APPEND_INT32 (c->reply, "minWireVersion", AMONGO_MIN_WIRE);
   BSON_APPEND_INT32 (c->reply, "maxWireVersion", AMONGO_MAX_WIRE);
   BSON_APPEND_BOOL (c->reply, "readOnly", false);
   reply_ok (c->reply);
}

static void
cmd_ping (cmd_t *c)
{
   reply_ok (c->reply);
}

static void
cmd_build_info (cmd_t *c)
{
   bson_t arr;
   BSON_APPEND_UTF8 (c->reply, "version", AMONGO_VERSION);
   BSON_APPEND_UTF8 (c->reply, "gitVersion", "benchserver");
   BSON_APPEND_ARRAY_BEGIN (c->reply, "versionArray", &arr);
   BSON_APPEND_INT32 (&arr, "0", 7);
   BSON_APPEND_INT32 (&arr, "1", 0);
   BSON_APPEND_INT32 (&arr, "2", 0);
   BSON_APPEND_INT32 (&arr, "3", 0);
   bson_append_array_end (c->reply, &arr);
   BSON_APPEND_INT32 (c->reply, "bits", 64);
   BSON_APPEND_BOOL (c->reply, "debug", false);
   BSON_APPEND_INT32 (c->reply, "maxBsonObjectSize", AMONGO_MAX_BSON_SIZE);
   reply_ok (c->reply);
}

/* ---- writes ---- */

static void
append_write_error (bson_t *werrs, uint32_t *nerr, size_t index, int code, const amongo_rec_t *rec,
                    const char *ns)
{
   char buf[16], msg[600];
   const char *key;
   bson_t e, kv, kp;
   bson_iter_t id;

   bson_uint32_to_string ((*nerr)++, &key, buf, sizeof buf);
   BSON_APPEND_DOCUMENT_BEGIN (werrs, key, &e);
   BSON_APPEND_INT32 (&e, "index", (int32_t) index);
   BSON_APPEND_INT32 (&e, "code", code);
   if (code == AMONGO_ERR_DUPLICATE_KEY && rec) {
      bson_t doc;
      bson_init (&kv);
      if (bson_init_static (&doc, AMONGO_REC_DOC (rec), rec->doclen) && bson_iter_init_find (&id, &doc, "_id")) {
         bson_append_iter (&kv, "_id", 3, &id);
      }
      char *json = bson_as_relaxed_extended_json (&kv, NULL);
      snprintf (msg, sizeof msg, "E11000 duplicate key error collection: %s index: _id_ dup key: %s", ns,
                json ? json : "{}");
      bson_free (json);
      BSON_APPEND_UTF8 (&e, "errmsg", msg);
      BSON_APPEND_DOCUMENT_BEGIN (&e, "keyPattern", &kp);
      BSON_APPEND_INT32 (&kp, "_id", 1);
      bson_append_document_end (&e, &kp);
      BSON_APPEND_DOCUMENT (&e, "keyValue", &kv);
      bson_destroy (&kv);
   } else {
      snprintf (msg, sizeof msg, "document %zu was refused (%s)", index, code_name (code));
      BSON_APPEND_UTF8 (&e, "errmsg", msg);
   }
   bson_append_document_end (werrs, &e);
}

static void
cmd_insert (cmd_t *c)
{
   const char *coll;
   bool ordered = true;
   amongo_doclist_t dl;
   if (arg_coll (c, &coll) || opt_bool (c, "ordered", &ordered)) {
      return;
   }
   if (!amongo_doclist_init (&dl, c->req, "documents")) {
      reply_error (c->reply, AMONGO_ERR_FAILED_TO_PARSE, "BSON field 'insert.documents' is missing");
      return;
   }

   /* Records are built (copied, keyed) before taking the lock, so the write lock covers only the index. */
   amongo_rec_t **recs = NULL;
   int *codes = NULL;
   size_t n = 0, cap = 0;
   bson_t doc;
   int rc;
   while ((rc = amongo_doclist_next (&dl, &doc)) == 1) {
      if (n == AMONGO_MAX_WRITE_BATCH) {
         rc = -2;
         break;
      }
      if (n == cap) {
         size_t ncap = cap ? cap * 2 : 16;
         amongo_rec_t **r2 = realloc (recs, ncap * sizeof *recs);
         if (r2) {
            recs = r2;
         }
         int *c2 = r2 ? realloc (codes, ncap * sizeof *codes) : NULL;
         if (!c2) {
            rc = -3;
            break;
         }
         codes = c2;
         cap = ncap;
      }
      codes[n] = 0;
      recs[n] = amongo_rec_new (bson_get_data (&doc), doc.len, &codes[n]);
      n++;
   }

   amongo_coll_t *cl = NULL;
   if (rc == 0 && n > 0) {
      cl = amongo_ns_get (c->req->db, coll, true);
   }
   if (!cl) {
      if (rc == -1) {
         reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "insert.documents holds a non-document");
      } else if (rc == -2 || (rc == 0 && n == 0)) {
         reply_error (c->reply, AMONGO_ERR_INVALID_LENGTH, "Write batch sizes must be between 1 and %d",
                      AMONGO_MAX_WRITE_BATCH);
      } else {
         reply_error (c->reply, AMONGO_ERR_OUT_OF_MEMORY, "out of memory");
      }
      for (size_t i = 0; i < n; i++) {
         free (recs[i]);
      }
      free (recs);
      free (codes);
      return;
   }

   int64_t inserted = 0;
   size_t seen = 0;
   pthread_rwlock_wrlock (&cl->lock);
   cl->exists = true;
   for (; seen < n; seen++) {
      if (recs[seen]) {
         int r = amongo_coll_insert_locked (cl, recs[seen]);
         if (r == 0) {
            recs[seen] = NULL;
            inserted++;
            continue;
         }
         codes[seen] = r == 1 ? AMONGO_ERR_DUPLICATE_KEY : AMONGO_ERR_OUT_OF_MEMORY;
      }
      if (ordered) {
         seen++;
         break;
      }
   }
   pthread_rwlock_unlock (&cl->lock);

   bson_t werrs;
   uint32_t nerr = 0;
   bson_init (&werrs);
   for (size_t i = 0; i < seen; i++) {
      if (codes[i]) {
         append_write_error (&werrs, &nerr, i, codes[i], recs[i], cl->ns);
      }
   }
   append_count (c->reply, "n", inserted);
   if (nerr) {
      BSON_APPEND_ARRAY (c->reply, "writeErrors", &werrs);
   }
   reply_ok (c->reply);
   bson_destroy (&werrs);
   for (size_t i = 0; i < n; i++) {
      free (recs[i]);
   }
   free (recs);
   free (codes);
}

static void
cmd_delete (cmd_t *c)
{
   const char *coll;
   bool ordered = true;
   amongo_doclist_t dl;
   if (arg_coll (c, &coll) || opt_bool (c, "ordered", &ordered)) {
      return;
   }
   if (!amongo_doclist_init (&dl, c->req, "deletes")) {
      reply_error (c->reply, AMONGO_ERR_FAILED_TO_PARSE, "BSON field 'delete.deletes' is missing");
      return;
   }
   amongo_coll_t *cl = amongo_ns_get (c->req->db, coll, false);
   int64_t deleted = 0;
   bson_t werrs, stmt;
   uint32_t nerr = 0;
   int rc;
   bson_init (&werrs);
   for (size_t i = 0; (rc = amongo_doclist_next (&dl, &stmt)) == 1; i++) {
      bson_iter_t it;
      bson_t q;
      int64_t limit = 0;
      char err[300] = "";
      int code = 0;
      amongo_matcher_t m;
      uint32_t qlen;
      const uint8_t *qdata;

      if (!bson_iter_init_find (&it, &stmt, "q") || !BSON_ITER_HOLDS_DOCUMENT (&it)) {
         code = AMONGO_ERR_FAILED_TO_PARSE;
         snprintf (err, sizeof err, "BSON field 'delete.deletes.q' is missing");
      } else {
         bson_iter_document (&it, &qlen, &qdata);
         if (!bson_init_static (&q, qdata, qlen)) {
            code = AMONGO_ERR_BAD_VALUE;
            snprintf (err, sizeof err, "invalid filter");
         }
      }
      if (!code && bson_iter_init_find (&it, &stmt, "limit") && (!iter_int64 (&it, &limit) || limit < 0 || limit > 1)) {
         code = AMONGO_ERR_FAILED_TO_PARSE;
         snprintf (err, sizeof err, "The limit field in delete objects must be 0 or 1");
      }
      if (!code) {
         code = amongo_matcher_compile (&m, &q, err, sizeof err);
      }
      if (code) {
         char buf[16];
         const char *key;
         bson_t e;
         bson_uint32_to_string (nerr++, &key, buf, sizeof buf);
         BSON_APPEND_DOCUMENT_BEGIN (&werrs, key, &e);
         BSON_APPEND_INT32 (&e, "index", (int32_t) i);
         BSON_APPEND_INT32 (&e, "code", code);
         BSON_APPEND_UTF8 (&e, "errmsg", err);
         bson_append_document_end (&werrs, &e);
         if (ordered) {
            break;
         }
         continue;
      }
      if (cl) {
         pthread_rwlock_wrlock (&cl->lock);
         if (m.nterms == 0 && limit == 0) {
            deleted += (int64_t) cl->live;
            amongo_coll_clear_locked (cl);
         } else if (m.id_term >= 0) {
            const amongo_term_t *t = &m.terms[m.id_term];
            amongo_rec_t *r = amongo_coll_find_id_locked (cl, t->key, t->keylen, t->hash);
            bson_t d;
            if (r && bson_init_static (&d, AMONGO_REC_DOC (r), r->doclen) && amongo_matcher_match (&m, &d)) {
               amongo_coll_remove_locked (cl, r);
               deleted++;
            }
         } else {
            for (size_t pos = 0; pos < cl->ndocs; pos++) {
               amongo_rec_t *r = cl->docs[pos];
               bson_t d;
               if (r && bson_init_static (&d, AMONGO_REC_DOC (r), r->doclen) && amongo_matcher_match (&m, &d)) {
                  amongo_coll_remove_locked (cl, r);
                  deleted++;
                  if (limit == 1) {
                     break;
                  }
               }
            }
         }
         pthread_rwlock_unlock (&cl->lock);
      }
      amongo_matcher_destroy (&m);
   }
   if (rc < 0) {
      bson_destroy (&werrs);
      reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "delete.deletes holds a non-document");
      return;
   }
   append_count (c->reply, "n", deleted);
   if (nerr) {
      BSON_APPEND_ARRAY (c->reply, "writeErrors", &werrs);
   }
   reply_ok (c->reply);
   bson_destroy (&werrs);
}

/* ---- reads ---- */

/* Answers {cursor: {firstBatch, id, ns}}; keeps a cursor open when documents remain. */
static void
run_read (cmd_t *c, const char *coll, const bson_t *filter, int64_t skip, int64_t limit, int64_t batch,
          bool single_batch)
{
   char err[300] = "";
   char ns[AMONGO_MAX_NS + 1];
   amongo_cursor_t *cur = calloc (1, sizeof *cur);
   if (!cur) {
      reply_error (c->reply, AMONGO_ERR_OUT_OF_MEMORY, "out of memory");
      return;
   }
   amongo_scan_init (&cur->scan, amongo_ns_get (c->req->db, coll, false), skip, limit);
   int code = amongo_matcher_compile (&cur->scan.m, filter, err, sizeof err);
   if (code) {
      amongo_cursor_free (cur);
      reply_error (c->reply, code, "%s", err);
      return;
   }
   snprintf (ns, sizeof ns, "%s.%s", c->req->db, coll);
   memcpy (cur->ns, ns, sizeof ns);

   int64_t first = batch;
   if (limit > 0 && limit < first) {
      first = limit;
   }
   bson_t cdoc, arr;
   uint32_t key = 0;
   BSON_APPEND_DOCUMENT_BEGIN (c->reply, "cursor", &cdoc);
   BSON_APPEND_ARRAY_BEGIN (&cdoc, "firstBatch", &arr);
   int64_t got = amongo_scan_fill (&cur->scan, &arr, &key, first, &code);
   bson_append_array_end (&cdoc, &arr);
   if (got < 0) {
      bson_append_document_end (c->reply, &cdoc);
      amongo_cursor_free (cur);
      reply_error (c->reply, code, "the query was killed");
      return;
   }
   int64_t id = 0;
   if (!cur->scan.done && !single_batch) {
      id = amongo_cursor_register (cur); /* from here another connection may kill it: not touched again */
   } else {
      amongo_cursor_free (cur);
   }
   BSON_APPEND_INT64 (&cdoc, "id", id);
   BSON_APPEND_UTF8 (&cdoc, "ns", ns);
   bson_append_document_end (c->reply, &cdoc);
   reply_ok (c->reply);
}

static void
cmd_find (cmd_t *c)
{
   const char *coll;
   bson_t filter, other;
   bool has_filter, has_other, single = false;
   int64_t skip = 0, limit = 0, batch = AMONGO_DEFAULT_FIRST_BATCH;

   if (arg_coll (c, &coll) || opt_doc (c, "filter", &filter, &has_filter) ||
       opt_int64 (c, "skip", 0, &skip) || opt_int64 (c, "limit", 0, &limit) ||
       opt_int64 (c, "batchSize", 0, &batch) || opt_bool (c, "singleBatch", &single)) {
      return;
   }
   static const char *const refused[] = {"projection", "sort", "min", "max"};
   for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
      if (opt_doc (c, refused[i], &other, &has_other)) {
         return;
      }
      if (has_other && !bson_empty (&other)) {
         reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "benchserver does not support find.%s", refused[i]);
         return;
      }
   }
   run_read (c, coll, has_filter ? &filter : NULL, skip, limit, batch, single);
}

static void
cmd_get_more (cmd_t *c)
{
   int64_t id, batch = 0;
   bson_iter_t it;
   const char *coll = NULL;
   char ns[AMONGO_MAX_NS + 2];

   if (!iter_int64 (&c->first, &id)) {
      reply_error (c->reply, AMONGO_ERR_TYPE_MISMATCH, "getMore's cursor id must be a number");
      return;
   }
   if (bson_iter_init_find (&it, &c->req->body, "collection")) {
      coll = iter_cstring (&it);
   }
   if (!coll) {
      reply_error (c->reply, AMONGO_ERR_FAILED_TO_PARSE, "BSON field 'getMore.collection' is missing");
      return;
   }
   if (opt_int64 (c, "batchSize", 0, &batch)) {
      return;
   }
   snprintf (ns, sizeof ns, "%s.%s", c->req->db, coll);

   amongo_cursor_t *cur = amongo_cursor_take (id);
   if (!cur) {
      reply_error (c->reply, AMONGO_ERR_CURSOR_NOT_FOUND, "cursor id %lld not found", (long long) id);
      return;
   }
   if (strcmp (cur->ns, ns) != 0) {
      amongo_cursor_put (cur);
      reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "cursor %lld belongs to another namespace", (long long) id);
      return;
   }

   bson_t cdoc, arr;
   uint32_t key = 0;
   int code;
   BSON_APPEND_DOCUMENT_BEGIN (c->reply, "cursor", &cdoc);
   BSON_APPEND_ARRAY_BEGIN (&cdoc, "nextBatch", &arr);
   int64_t got = amongo_scan_fill (&cur->scan, &arr, &key, batch > 0 ? batch : -1, &code);
   bson_append_array_end (&cdoc, &arr);
   if (got < 0) {
      bson_append_document_end (c->reply, &cdoc);
      amongo_cursor_free (cur);
      reply_error (c->reply, code, "cursor %lld was killed: its collection was dropped", (long long) id);
      return;
   }
   if (cur->scan.done) {
      amongo_cursor_free (cur);
      id = 0;
   } else {
      amongo_cursor_put (cur);
   }
   BSON_APPEND_INT64 (&cdoc, "id", id);
   BSON_APPEND_UTF8 (&cdoc, "ns", ns);
   bson_append_document_end (c->reply, &cdoc);
   reply_ok (c->reply);
}

static void
cmd_kill_cursors (cmd_t *c)
{
   const char *coll;
   bson_iter_t it, ids;
   if (arg_coll (c, &coll)) {
      return;
   }
   if (!bson_iter_init_find (&it, &c->req->body, "cursors") || !BSON_ITER_HOLDS_ARRAY (&it) ||
       !bson_iter_recurse (&it, &ids)) {
      reply_error (c->reply, AMONGO_ERR_FAILED_TO_PARSE, "BSON field 'killCursors.cursors' is missing");
      return;
   }
   bson_t killed, missing, empty;
   uint32_t nk = 0, nm = 0;
   bson_init (&killed);
   bson_init (&missing);
   bson_init (&empty);
   while (bson_iter_next (&ids)) {
      int64_t id;
      char buf[16];
      const char *key;
      if (!iter_int64 (&ids, &id)) {
         continue;
      }
      amongo_cursor_t *cur = amongo_cursor_take (id);
      if (cur) {
         amongo_cursor_free (cur);
         bson_uint32_to_string (nk++, &key, buf, sizeof buf);
         BSON_APPEND_INT64 (&killed, key, id);
      } else {
         bson_uint32_to_string (nm++, &key, buf, sizeof buf);
         BSON_APPEND_INT64 (&missing, key, id);
      }
   }
   BSON_APPEND_ARRAY (c->reply, "cursorsKilled", &killed);
   BSON_APPEND_ARRAY (c->reply, "cursorsNotFound", &missing);
   BSON_APPEND_ARRAY (c->reply, "cursorsAlive", &empty);
   BSON_APPEND_ARRAY (c->reply, "cursorsUnknown", &empty);
   reply_ok (c->reply);
   bson_destroy (&killed);
   bson_destroy (&missing);
   bson_destroy (&empty);
}

/* n documents matching filter after skip/limit, or -1 after replying with an error. */
static int64_t
count_matching (cmd_t *c, const char *coll, const bson_t *filter, int64_t skip, int64_t limit)
{
   char err[300] = "";
   amongo_scan_t s;
   amongo_scan_init (&s, amongo_ns_get (c->req->db, coll, false), skip, limit);
   int code = amongo_matcher_compile (&s.m, filter, err, sizeof err);
   if (code) {
      reply_error (c->reply, code, "%s", err);
      return -1;
   }
   int64_t n = amongo_scan_count (&s, &code);
   amongo_scan_destroy (&s);
   if (n < 0) {
      reply_error (c->reply, code, "count failed");
   }
   return n;
}

static void
cmd_count (cmd_t *c)
{
   const char *coll;
   bson_t query;
   bool has_query;
   int64_t skip = 0, limit = 0;
   if (arg_coll (c, &coll) || opt_doc (c, "query", &query, &has_query) || opt_int64 (c, "skip", 0, &skip) ||
       opt_int64 (c, "limit", INT64_MIN, &limit)) {
      return;
   }
   int64_t n = count_matching (c, coll, has_query ? &query : NULL, skip, limit < 0 ? -limit : limit);
   if (n >= 0) {
      append_count (c->reply, "n", n);
      reply_ok (c->reply);
   }
}

/* Pipelines of the shape [$match]? [$skip]? [$limit]? [$count | counting $group]?: what drivers send for
 * count_documents, and plain reads. */
static void
cmd_aggregate (cmd_t *c)
{
   const char *coll;
   bson_iter_t it, stage;
   bson_t match, cursor_opts;
   bool has_match = false, has_cursor_opts;
   int64_t skip = 0, limit = 0, batch = AMONGO_DEFAULT_FIRST_BATCH;
   const char *count_name = NULL;
   bson_iter_t group; /* the $group document, when the pipeline ends with one */
   bool has_group = false;
   int order = 0;      /* stages must come in the order above */

   if (!BSON_ITER_HOLDS_UTF8 (&c->first)) {
      reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "benchserver aggregates only over a collection");
      return;
   }
   if (arg_coll (c, &coll) || opt_doc (c, "cursor", &cursor_opts, &has_cursor_opts)) {
      return;
   }
   if (has_cursor_opts && bson_iter_init_find (&it, &cursor_opts, "batchSize") &&
       (!iter_int64 (&it, &batch) || batch < 0)) {
      reply_error (c->reply, AMONGO_ERR_BAD_VALUE, "cursor.batchSize must be a non-negative number");
      return;
   }
   if (!bson_iter_init_find (&it, &c->req->body, "pipeline") || !BSON_ITER_HOLDS_ARRAY (&it) ||
       !bson_iter_recurse (&it, &stage)) {
      reply_error (c->reply, AMONGO_ERR_FAILED_TO_PARSE, "BSON field 'aggregate.pipeline' is missing");
      return;
   }
   while (bson_iter_next (&stage)) {
      bson_iter_t op;
      if (order == 4 || !BSON_ITER_HOLDS_DOCUMENT (&stage) || !bson_iter_recurse (&stage, &op) ||
          !bson_iter_next (&op)) {
         goto unsupported;
      }
      const char *name = bson_iter_key (&op);
      if (!strcmp (name, "$match") && order < 1 && BSON_ITER_HOLDS_DOCUMENT (&op)) {
         uint32_t len;
         const uint8_t *data;
         bson_iter_document (&op, &len, &data);
         if (!bson_init_static (&match, data, len)) {
            goto unsupported;
         }
         has_match = true;
         order = 1;
      } else if (!strcmp (name, "$skip") && order < 2 && iter_int64 (&op, &skip) && skip >= 0) {
         order = 2;
      } else if (!strcmp (name, "$limit") && order < 3 && iter_int64 (&op, &limit) && limit > 0) {
         order = 3;
      } else if (!strcmp (name, "$count") && (count_name = iter_cstring (&op)) && *count_name) {
         order = 4;
      } else if (!strcmp (name, "$group") && BSON_ITER_HOLDS_DOCUMENT (&op)) {
         /* {_id: <constant>, f: {$sum: <integer>}, ...}: a count under another name */
         bson_iter_t g;
         bool has_id = false;
         if (!bson_iter_recurse (&op, &g)) {
            goto unsupported;
         }
         while (bson_iter_next (&g)) {
            bson_iter_t acc;
            int64_t k;
            if (!strcmp (bson_iter_key (&g), "_id")) {
               const char *s = BSON_ITER_HOLDS_UTF8 (&g) ? iter_cstring (&g) : "";
               if (!s || s[0] == '$' || BSON_ITER_HOLDS_DOCUMENT (&g)) {
                  goto unsupported;
               }
               has_id = true;
            } else if (!BSON_ITER_HOLDS_DOCUMENT (&g) || !bson_iter_recurse (&g, &acc) || !bson_iter_next (&acc) ||
                       strcmp (bson_iter_key (&acc), "$sum") || !iter_int64 (&acc, &k)) {
               goto unsupported;
            }
         }
         if (!has_id) {
            goto unsupported;
         }
         group = op;
         has_group = true;
         order = 4;
      } else {
         goto unsupported;
      }
   }

   if (order < 4) {
      run_read (c, coll, has_match ? &match : NULL, skip, limit, batch, false);
      return;
   }
   int64_t n = count_matching (c, coll, has_match ? &match : NULL, skip, limit);
   if (n < 0) {
      return;
   }
   bson_t cdoc, arr, row;
   BSON_APPEND_DOCUMENT_BEGIN (c->reply, "cursor", &cdoc);
   BSON_APPEND_ARRAY_BEGIN (&cdoc, "firstBatch", &arr);
   if (n > 0) {
      BSON_APPEND_DOCUMENT_BEGIN (&arr, "0", &row);
      if (has_group) {
         bson_iter_t g;
         bson_iter_recurse (&group, &g);
         while (bson_iter_next (&g)) {
            bson_iter_t acc;
            int64_t k = 0;
            if (!strcmp (bson_iter_key (&g), "_id")) {
               bson_append_iter (&row, "_id", 3, &g);
            } else if (bson_iter_recurse (&g, &acc) && bson_iter_next (&acc) && iter_int64 (&acc, &k)) {
               append_count (&row, bson_iter_key (&g), n * k);
            }
         }
      } else {
         append_count (&row, count_name, n);
      }
      bson_append_document_end (&arr, &row);
   }
   bson_append_array_end (&cdoc, &arr);
   BSON_APPEND_INT64 (&cdoc, "id", 0);
   char ns[AMONGO_MAX_NS + 2];
   snprintf (ns, sizeof ns, "%s.%s", c->req->db, coll);
   BSON_APPEND_UTF8 (&cdoc, "ns", ns);
   bson_append_document_end (c->reply, &cdoc);
   reply_ok (c->reply);
   return;

unsupported:
   reply_error (c->reply, AMONGO_ERR_BAD_VALUE,
                "benchserver supports only pipelines [$match] [$skip] [$limit] [$count | counting $group]");
}

/* ---- namespaces ---- */

static void
cmd_drop (cmd_t *c)
{
   const char *coll;
   if (arg_coll (c, &coll)) {
      return;
   }
   amongo_coll_t *cl = amongo_ns_get (c->req->db, coll, false);
   bool was = false;
   if (cl) {
      pthread_rwlock_wrlock (&cl->lock);
      if (cl->exists) {
         amongo_coll_clear_locked (cl);
         cl->exists = false;
         cl->generation++;
         was = true;
      }
      pthread_rwlock_unlock (&cl->lock);
   }
   if (was) {
      BSON_APPEND_INT32 (c->reply, "nIndexesWas", 1);
      BSON_APPEND_UTF8 (c->reply, "ns", cl->ns);
   }
   reply_ok (c->reply); /* MongoDB 7 also answers ok for a collection that does not exist */
}

static void
cmd_create (cmd_t *c)
{
   const char *coll;
   if (arg_coll (c, &coll)) {
      return;
   }
   amongo_coll_t *cl = amongo_ns_get (c->req->db, coll, true);
   if (!cl) {
      reply_error (c->reply, AMONGO_ERR_OUT_OF_MEMORY, "out of memory");
      return;
   }
   pthread_rwlock_wrlock (&cl->lock);
   bool existed = cl->exists;
   cl->exists = true;
   pthread_rwlock_unlock (&cl->lock);
   if (existed) {
      reply_error (c->reply, AMONGO_ERR_NAMESPACE_EXISTS, "Collection %s already exists.", cl->ns);
      return;
   }
   reply_ok (c->reply);
}

typedef struct {
   const char *db; /* NULL: every database */
   size_t dblen;
   bool drop;
   char **names; /* collection names, or database names when db is NULL */
   uint64_t *bytes;
   size_t n, cap;
   bool oom;
} ns_walk_t;

static bool
walk_add (ns_walk_t *w, const char *name, size_t len, uint64_t bytes)
{
   if (!w->db) {
      for (size_t i = 0; i < w->n; i++) {
         if (strlen (w->names[i]) == len && !memcmp (w->names[i], name, len)) {
            w->bytes[i] += bytes;
            return true;
         }
      }
   }
   if (w->n == w->cap) {
      size_t ncap = w->cap ? w->cap * 2 : 16;
      char **n2 = realloc (w->names, ncap * sizeof *n2);
      if (n2) {
         w->names = n2;
      }
      uint64_t *b2 = n2 ? realloc (w->bytes, ncap * sizeof *b2) : NULL;
      if (!b2) {
         return false;
      }
      w->bytes = b2;
      w->cap = ncap;
   }
   if (!(w->names[w->n] = strndup (name, len))) {
      return false;
   }
   w->bytes[w->n++] = bytes;
   return true;
}

static void
walk_one (amongo_coll_t *cl, void *arg)
{
   ns_walk_t *w = arg;
   if (w->db && (cl->dblen != w->dblen || memcmp (cl->ns, w->db, w->dblen) != 0)) {
      return;
   }
   if (w->drop) {
      pthread_rwlock_wrlock (&cl->lock);
      if (cl->exists) {
         amongo_coll_clear_locked (cl);
         cl->exists = false;
         cl->generation++;
      }
      pthread_rwlock_unlock (&cl->lock);
      return;
   }
   pthread_rwlock_rdlock (&cl->lock);
   bool exists = cl->exists;
   uint64_t bytes = cl->bytes;
   pthread_rwlock_unlock (&cl->lock);
   if (exists) {
      const char *name = w->db ? cl->ns + cl->dblen + 1 : cl->ns;
      size_t len = w->db ? strlen (name) : cl->dblen;
      if (!w->oom && !walk_add (w, name, len, bytes)) {
         w->oom = true;
      }
   }
}

static void
walk_free (ns_walk_t *w)
{
   for (size_t i = 0; i < w->n; i++) {
      free (w->names[i]);
   }
   free (w->names);
   free (w->bytes);
}

static void
cmd_drop_database (cmd_t *c)
{
   ns_walk_t w = {c->req->db, strlen (c->req->db), true, NULL, NULL, 0, 0, false};
   amongo_ns_foreach (walk_one, &w);
   BSON_APPEND_UTF8 (c->reply, "dropped", c->req->db);
   reply_ok (c->reply);
}

/* listCollections and listDatabases: generated documents, filtered like stored ones. */
static void
list_reply (cmd_t *c, ns_walk_t *w, bool databases)
{
   bson_t filter;
   bool has_filter, name_only = false;
   amongo_matcher_t m;
   char err[300] = "";
   int code;

   if (opt_doc (c, "filter", &filter, &has_filter) || opt_bool (c, "nameOnly", &name_only)) {
      return;
   }
   if ((code = amongo_matcher_compile (&m, has_filter ? &filter : NULL, err, sizeof err))) {
      reply_error (c->reply, code, "%s", err);
      return;
   }
   amongo_ns_foreach (walk_one, w);
   if (w->oom) {
      amongo_matcher_destroy (&m);
      reply_error (c->reply, AMONGO_ERR_OUT_OF_MEMORY, "out of memory");
      return;
   }
   bson_t cdoc, arr;
   uint32_t key = 0;
   uint64_t total = 0;
   if (databases) {
      BSON_APPEND_ARRAY_BEGIN (c->reply, "databases", &arr);
   } else {
      BSON_APPEND_DOCUMENT_BEGIN (c->reply, "cursor", &cdoc);
      BSON_APPEND_ARRAY_BEGIN (&cdoc, "firstBatch", &arr);
   }
   for (size_t i = 0; i < w->n; i++) {
      bson_t d, sub;
      bson_init (&d);
      BSON_APPEND_UTF8 (&d, "name", w->names[i]);
      if (databases) {
         if (!name_only) {
            BSON_APPEND_DOUBLE (&d, "sizeOnDisk", (double) w->bytes[i]);
            BSON_APPEND_BOOL (&d, "empty", w->bytes[i] == 0);
         }
      } else {
         BSON_APPEND_UTF8 (&d, "type", "collection");
         if (!name_only) {
            BSON_APPEND_DOCUMENT_BEGIN (&d, "options", &sub);
            bson_append_document_end (&d, &sub);
            BSON_APPEND_DOCUMENT_BEGIN (&d, "info", &sub);
            BSON_APPEND_BOOL (&sub, "readOnly", false);
            bson_append_document_end (&d, &sub);
            BSON_APPEND_DOCUMENT_BEGIN (&d, "idIndex", &sub);
            BSON_APPEND_INT32 (&sub, "v", 2);
            bson_t k;
            BSON_APPEND_DOCUMENT_BEGIN (&sub, "key", &k);
            BSON_APPEND_INT32 (&k, "_id", 1);
            bson_append_document_end (&sub, &k);
            BSON_APPEND_UTF8 (&sub, "name", "_id_");
            bson_append_document_end (&d, &sub);
         }
      }
      if (amongo_matcher_match (&m, &d)) {
         char buf[16];
         const char *k;
         bson_uint32_to_string (key++, &k, buf, sizeof buf);
         BSON_APPEND_DOCUMENT (&arr, k, &d);
         total += w->bytes[i];
      }
      bson_destroy (&d);
   }
   if (databases) {
      bson_append_array_end (c->reply, &arr);
      if (!name_only) {
         BSON_APPEND_DOUBLE (c->reply, "totalSize", (double) total);
         BSON_APPEND_INT64 (c->reply, "totalSizeMb", (int64_t) (total / (1024 * 1024)));
      }
   } else {
      char ns[AMONGO_MAX_DB + 32];
      bson_append_array_end (&cdoc, &arr);
      BSON_APPEND_INT64 (&cdoc, "id", 0);
      snprintf (ns, sizeof ns, "%s.$cmd.listCollections", c->req->db);
      BSON_APPEND_UTF8 (&cdoc, "ns", ns);
      bson_append_document_end (c->reply, &cdoc);
   }
   amongo_matcher_destroy (&m);
   reply_ok (c->reply);
}

static void
cmd_list_collections (cmd_t *c)
{
   ns_walk_t w = {c->req->db, strlen (c->req->db), false, NULL, NULL, 0, 0, false};
   list_reply (c, &w, false);
   walk_free (&w);
}

static void
cmd_list_databases (cmd_t *c)
{
   ns_walk_t w = {NULL, 0, false, NULL, NULL, 0, 0, false};
   list_reply (c, &w, true);
   walk_free (&w);
}

/* ---- dispatch ---- */

typedef void (*cmd_fn) (cmd_t *);

static const struct {
   const char *name;
   cmd_fn fn;
   bool handshake; /* may arrive over legacy OP_QUERY */
} commands[] = {
   /* the hot ones first: the table is searched in order */
   {"find", cmd_find, false},
   {"insert", cmd_insert, false},
   {"getMore", cmd_get_more, false},
   {"hello", cmd_hello, true},
   {"isMaster", cmd_hello, true},
   {"ismaster", cmd_hello, true},
   {"ping", cmd_ping, false},
   {"killCursors", cmd_kill_cursors, false},
   {"aggregate", cmd_aggregate, false},
   {"count", cmd_count, false},
   {"delete", cmd_delete, false},
   {"drop", cmd_drop, false},
   {"create", cmd_create, false},
   {"dropDatabase", cmd_drop_database, false},
   {"listCollections", cmd_list_collections, false},
   {"listDatabases", cmd_list_databases, false},
   {"buildInfo", cmd_build_info, false},
   {"buildinfo", cmd_build_info, false},
   {"endSessions", cmd_ping, false},
};

void
amongo_command_run (const amongo_request_t *req, bson_t *reply)
{
   cmd_t c = {req, NULL, {0}, reply};
   if (!bson_iter_init (&c.first, &req->body) || !bson_iter_next (&c.first)) {
      reply_error (reply, AMONGO_ERR_FAILED_TO_PARSE, "empty command");
      return;
   }
   c.name = bson_iter_key (&c.first);
   if (!req->db) {
      reply_error (reply, AMONGO_ERR_FAILED_TO_PARSE, "the command has no $db");
      return;
   }
   for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
      if (!strcmp (c.name, commands[i].name)) {
         if (req->op_query && !commands[i].handshake) {
            reply_error (reply, AMONGO_ERR_UNSUPPORTED_OP_QUERY, "Unsupported OP_QUERY command: %s", c.name);
            return;
         }
         commands[i].fn (&c);
         return;
      }
   }
   reply_error (reply, req->op_query ? AMONGO_ERR_UNSUPPORTED_OP_QUERY : AMONGO_ERR_COMMAND_NOT_FOUND,
                "no such command: '%.100s'", c.name);
}
