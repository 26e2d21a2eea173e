/* The bench server: a small in-memory MongoDB wire-protocol server, a measuring instrument for
 * benchmarks/ only. It answers the benchmark's commands fast enough that the driver, not the server,
 * is what is measured. It implements a deliberate subset of MongoDB and must never be used to test a
 * driver's correctness: anything it does not implement is refused with an error, never approximated. */
#ifndef AMONGO_BENCHSERVER_H
#define AMONGO_BENCHSERVER_H

#include <bson/bson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AMONGO_MAX_BSON_SIZE (16 * 1024 * 1024)
#define AMONGO_MAX_MESSAGE_SIZE 48000000
#define AMONGO_MAX_WRITE_BATCH 100000
#define AMONGO_BATCH_BYTES (16 * 1024 * 1024) /* a cursor batch stops growing past this */
#define AMONGO_DEFAULT_FIRST_BATCH 101
#define AMONGO_MAX_DEPTH 100 /* nesting levels of a stored document */
#define AMONGO_MAX_NS 255
#define AMONGO_MAX_DB 63
#define AMONGO_MIN_WIRE 0
#define AMONGO_MAX_WIRE 21
#define AMONGO_VERSION "7.0.0"

/* Server error codes, as MongoDB spells them. */
enum {
   AMONGO_ERR_BAD_VALUE = 2,
   AMONGO_ERR_FAILED_TO_PARSE = 9,
   AMONGO_ERR_TYPE_MISMATCH = 14,
   AMONGO_ERR_INVALID_LENGTH = 16,
   AMONGO_ERR_CURSOR_NOT_FOUND = 43,
   AMONGO_ERR_NAMESPACE_EXISTS = 48,
   AMONGO_ERR_COMMAND_NOT_FOUND = 59,
   AMONGO_ERR_INVALID_NAMESPACE = 73,
   AMONGO_ERR_QUERY_PLAN_KILLED = 175,
   AMONGO_ERR_UNSUPPORTED_OP_QUERY = 352,
   AMONGO_ERR_OBJECT_TOO_LARGE = 10334,
   AMONGO_ERR_DUPLICATE_KEY = 11000,
   AMONGO_ERR_OUT_OF_MEMORY = 146, /* ExceededMemoryLimit: the closest code for a failed malloc */
};

/* ---- requests (conn.c parses, commands.c reads) ---- */

/* One OP_MSG kind-1 section. Its documents were bounds-checked when the message was parsed. */
typedef struct {
   const char *ident; /* NUL-terminated, points into the message */
   const uint8_t *data;
   size_t len;
} amongo_seq_t;

#define AMONGO_MAX_SEQS 4

typedef struct {
   bson_t body;      /* static view over the kind-0 section (or the OP_QUERY query) */
   const char *db;   /* $db, or the database of an OP_QUERY's namespace; NULL if missing */
   amongo_seq_t seqs[AMONGO_MAX_SEQS];
   int nseqs;
   int32_t connection_id;
   bool op_query;    /* legacy OP_QUERY: only the handshake commands are answered */
} amongo_request_t;

/* Documents of a write command's list argument, wherever the driver put them: a kind-1 sequence or an
 * array in the body. */
typedef struct {
   bool from_seq;
   const uint8_t *p, *end;
   bson_iter_t arr;
} amongo_doclist_t;

/* false when the request has no such list */
bool amongo_doclist_init (amongo_doclist_t *dl, const amongo_request_t *req, const char *field);
/* 1: *doc is a static view of the next document; 0: end; -1: malformed element */
int amongo_doclist_next (amongo_doclist_t *dl, bson_t *doc);

/* A connection thread's start routine: owns arg (malloc'd) and its socket, closes both on return. */
typedef struct {
   int fd;
   int32_t id;
} amongo_conn_arg_t;
void *amongo_conn_main (void *arg);

/* Fills `reply` (an empty, initialised bson_t) with the command's reply, ok:1 or ok:0. */
void amongo_command_run (const amongo_request_t *req, bson_t *reply);

/* ---- the store (store.c) ---- */

/* One stored document: its canonical _id key, then its raw BSON, in one allocation. Immutable once in a
 * collection; freed only under the collection's write lock. */
typedef struct {
   uint64_t hash;
   uint32_t keylen;
   uint32_t doclen;
   size_t pos; /* index in the collection's docs array */
   uint8_t data[];
} amongo_rec_t;

#define AMONGO_REC_DOC(r) ((r)->data + (r)->keylen)

typedef struct amongo_coll {
   /* Guards every field below except ns/dblen/next, which never change once published. */
   pthread_rwlock_t lock;
   char *ns;     /* "db.coll" */
   size_t dblen; /* ns[dblen] is the first '.' */
   bool exists;  /* collections are never freed: drop clears and unsets this */
   uint64_t generation; /* bumped by drop, so cursors opened before a drop are killed */
   amongo_rec_t **docs; /* insertion order; NULL where a document was deleted */
   size_t ndocs, cap, live;
   uint64_t bytes;
   amongo_rec_t **index; /* open addressing by _id key; NULL = empty slot */
   size_t index_cap, index_used; /* used counts tombstones too */
   struct amongo_coll *next; /* namespace table chain */
} amongo_coll_t;

/* Namespace names: 0 when valid, else an error message is written. */
int amongo_ns_check (const char *db, const char *coll, char *err, size_t errlen);
/* The collection for db.coll. create: make the (not yet existing) entry if absent; NULL then means out
 * of memory. Without create, NULL means never seen. The pointer stays valid for the process. */
amongo_coll_t *amongo_ns_get (const char *db, const char *coll, bool create);
/* Calls fn on every collection entry (existing or dropped), under the table's read lock. */
void amongo_ns_foreach (void (*fn) (amongo_coll_t *, void *), void *arg);

/* Canonical key of a BSON value: equal values (1, 1L, 1.0 included) give equal bytes. Writes at most
 * cap bytes to out and returns the full length. */
size_t amongo_key_encode (const bson_iter_t *it, uint8_t *out, size_t cap);
uint64_t amongo_key_hash (const uint8_t *key, size_t len);

/* false when doc nests deeper than max_depth (<= AMONGO_MAX_DEPTH) or does not iterate. */
bool amongo_depth_ok (const bson_t *doc, int max_depth);

/* New record from raw BSON; adds an ObjectId _id when the document has none. NULL with *code set
 * (out of memory, too large, invalid). */
amongo_rec_t *amongo_rec_new (const uint8_t *doc, uint32_t len, int *code);

/* 0: inserted (the collection owns rec); 1: duplicate _id; -1: out of memory. */
int amongo_coll_insert_locked (amongo_coll_t *c, amongo_rec_t *rec);
amongo_rec_t *amongo_coll_find_id_locked (amongo_coll_t *c, const uint8_t *key, size_t keylen, uint64_t hash);
void amongo_coll_remove_locked (amongo_coll_t *c, amongo_rec_t *rec);
void amongo_coll_clear_locked (amongo_coll_t *c);

/* A filter: top-level equality terms (value or {$eq: value}); nothing else is accepted. */
typedef struct {
   char *name;
   uint8_t *key;
   size_t keylen;
   uint64_t hash;
   bool is_null; /* {f: null} also matches a missing field */
} amongo_term_t;

typedef struct {
   amongo_term_t *terms;
   size_t nterms;
   ssize_t id_term; /* the _id term, looked up in the index instead of scanning; -1 if none */
} amongo_matcher_t;

/* 0 or an error code with a message in err. The matcher copies what it needs from filter. */
int amongo_matcher_compile (amongo_matcher_t *m, const bson_t *filter, char *err, size_t errlen);
bool amongo_matcher_match (const amongo_matcher_t *m, const bson_t *doc);
void amongo_matcher_destroy (amongo_matcher_t *m);

/* A read in progress: the first batch of a find, or a cursor between getMores. */
typedef struct {
   amongo_coll_t *coll; /* NULL: the collection was never seen, the scan is empty */
   uint64_t generation;
   bool started;
   amongo_matcher_t m;
   size_t pos;
   int64_t skip;
   int64_t limit_left; /* -1: no limit */
   bool done;
} amongo_scan_t;

void amongo_scan_init (amongo_scan_t *s, amongo_coll_t *coll, int64_t skip, int64_t limit);
/* Appends up to max_docs (-1: no cap) matching documents to arr, whose next key is *key; stops at
 * AMONGO_BATCH_BYTES. Returns the number appended, or -1 with *code set. */
int64_t amongo_scan_fill (amongo_scan_t *s, bson_t *arr, uint32_t *key, int64_t max_docs, int *code);
int64_t amongo_scan_count (amongo_scan_t *s, int *code);
void amongo_scan_destroy (amongo_scan_t *s);

typedef struct amongo_cursor {
   int64_t id;
   amongo_scan_t scan;
   char ns[AMONGO_MAX_NS + 1];
   int64_t last_used;
   struct amongo_cursor *next;
} amongo_cursor_t;

/* Takes ownership; returns the new cursor id. */
int64_t amongo_cursor_register (amongo_cursor_t *c);
/* Removes the cursor from the table so only the caller uses it; NULL if unknown. */
amongo_cursor_t *amongo_cursor_take (int64_t id);
void amongo_cursor_put (amongo_cursor_t *c);
void amongo_cursor_free (amongo_cursor_t *c);

int amongo_store_init (void);

#endif
