/* ceiling: the benchmark's operations from native threads calling libmongoc directly, no Python at all.
 * It is the ceiling of asyncmongo's architecture (C workers over a mongoc_client_pool_t): the distance
 * between a driver's numbers and these is what the layers above libmongoc cost. Prints one JSON line
 * with the same keys as benchmarks/worker.py; errors go to stderr with a non-zero exit. The GridFS ops
 * use libmongoc's mongoc_gridfs_bucket_t: a file uploaded from memory, or downloaded into memory. */
#include <bson/bson.h>
#include <mongoc/mongoc.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

typedef enum {
   OP_FIND_ONE,
   OP_INSERT_ONE,
   OP_COMMAND,
   OP_FIND_MANY,
   OP_BULK_INSERT,
   OP_GRIDFS_UPLOAD,
   OP_GRIDFS_DOWNLOAD,
   OP_COUNT
} op_t;
static const char *const op_names[OP_COUNT] = {
   "find_one", "insert_one", "command", "find_many", "bulk_insert", "gridfs_upload", "gridfs_download"};
#define IS_GRIDFS(op) ((op) == OP_GRIDFS_UPLOAD || (op) == OP_GRIDFS_DOWNLOAD)

#define SEED_BATCH 1000
/* As the Python harness (spec_tasks.py, drivers.py): the file moved, the upload's untimed 1-byte file. */
#define GRIDFS_FILENAME "gridfstest"
#define ONE_BYTE_FILENAME "one-byte"

typedef struct {
   const char *uri;
   op_t op;
   long concurrency, ops, warmup, pool, batch, seed_docs;
   long file_bytes; /* gridfs ops: move the first N bytes of --doc; -1 = all of it */
   const char *doc_path, *db, *coll;
} config_t;

typedef struct {
   const config_t *cfg;
   mongoc_client_pool_t *pool;
   const bson_t *tmpl;         /* the --doc document without _id, or NULL */
   const bson_t **batch_docs;  /* bulk_insert: cfg->batch pointers to the template */
   bson_t find_one_opts, hello, empty;
   int64_t docs_per_cursor;    /* find_many: what a full cursor yields */
   uint8_t *file_data;         /* gridfs ops: the file, in memory */
   size_t file_len;
   bson_value_t file_id;       /* gridfs_download: the file prepare() stored */
   /* gridfs ops time each file alone (one thread): the sum of those windows and their CPU */
   uint64_t gridfs_wall_ns;
   double gridfs_user_s, gridfs_sys_s;
   atomic_long next_warm, next_timed, misses;
   atomic_int failed;
   pthread_mutex_t err_lock;   /* guards err: the first failure wins */
   char err[1024];
   uint64_t *lat_ns;           /* one slot per timed op, written only by the thread that ran it */
   pthread_barrier_t warmed, go, finished;
} bench_t;

static void BSON_GNUC_PRINTF (1, 2)
die (const char *fmt, ...)
{
   va_list ap;
   va_start (ap, fmt);
   fprintf (stderr, "ceiling: ");
   vfprintf (stderr, fmt, ap);
   fprintf (stderr, "\n");
   va_end (ap);
   exit (1);
}

/* stdout carries exactly one JSON line: libmongoc's default handler would print debug lines there. */
static void
log_to_stderr (mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
   (void) data;
   if (level <= MONGOC_LOG_LEVEL_WARNING) {
      fprintf (stderr, "ceiling: %s: %s: %s\n", mongoc_log_level_str (level), domain, message);
   }
}

static uint64_t
now_ns (void)
{
   struct timespec ts;
   clock_gettime (CLOCK_MONOTONIC, &ts);
   return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void
record_failure (bench_t *b, const char *what, const bson_error_t *error)
{
   pthread_mutex_lock (&b->err_lock);
   if (!atomic_load (&b->failed)) {
      snprintf (b->err, sizeof b->err, "%s failed: %s (domain %u, code %u)", what, error->message,
                error->domain, error->code);
      atomic_store (&b->failed, 1);
   }
   pthread_mutex_unlock (&b->err_lock);
}

static double
tv_s (struct timeval tv)
{
   return (double) tv.tv_sec + (double) tv.tv_usec / 1e6;
}

/* A bucket object named --coll (its collections: <coll>.files and <coll>.chunks). */
static mongoc_gridfs_bucket_t *
open_bucket (const bench_t *b, mongoc_client_t *client, bson_error_t *error)
{
   bson_t opts;
   bson_init (&opts);
   BSON_APPEND_UTF8 (&opts, "bucketName", b->cfg->coll);
   mongoc_database_t *db = mongoc_client_get_database (client, b->cfg->db);
   mongoc_gridfs_bucket_t *bucket = mongoc_gridfs_bucket_new (db, &opts, NULL, error);
   mongoc_database_destroy (db);
   bson_destroy (&opts);
   return bucket;
}

/* Stores len bytes from memory as a new file through an upload stream; *file_id receives its _id
 * (the caller destroys it). */
static bool
gridfs_put (mongoc_gridfs_bucket_t *bucket, const char *filename, uint8_t *data, size_t len,
            bson_value_t *file_id, bson_error_t *error)
{
   mongoc_stream_t *up = mongoc_gridfs_bucket_open_upload_stream (bucket, filename, NULL, file_id, error);
   if (!up) {
      return false;
   }
   bool ok = true;
   for (size_t off = 0; ok && off < len;) {
      ssize_t w = mongoc_stream_write (up, data + off, len - off, 0);
      ok = w > 0;
      off += ok ? (size_t) w : 0;
   }
   /* The files document goes in on close: only then does the file exist. */
   ok = ok && mongoc_stream_close (up) == 0;
   if (!ok && !mongoc_gridfs_bucket_stream_error (up, error)) {
      bson_set_error (error, 0, 0, "the upload stream failed without an error");
   }
   mongoc_stream_destroy (up);
   return ok;
}

/* Reads a whole file into a fresh buffer (*out, the caller frees it), as a driver hands back the bytes.
 * cap is the expected length: one byte more is asked for, so a longer file shows in *len. */
static bool
gridfs_get (mongoc_gridfs_bucket_t *bucket, const bson_value_t *file_id, size_t cap, uint8_t **out,
            size_t *len, bson_error_t *error)
{
   *out = NULL;
   *len = 0;
   mongoc_stream_t *down = mongoc_gridfs_bucket_open_download_stream (bucket, file_id, error);
   if (!down) {
      return false;
   }
   uint8_t *buf = malloc (cap + 1);
   if (!buf) {
      die ("%s", "out of memory");
   }
   ssize_t r;
   size_t got = 0;
   while (got <= cap && (r = mongoc_stream_read (down, buf + got, cap + 1 - got, 0, 0)) > 0) {
      got += (size_t) r;
   }
   bool ok = !mongoc_gridfs_bucket_stream_error (down, error);
   mongoc_stream_destroy (down);
   *out = buf;
   *len = got;
   return ok;
}

static bool
drop_collection (mongoc_collection_t *coll, bson_error_t *error);

/* Drops <coll>.files and <coll>.chunks. */
static bool
drop_bucket (const bench_t *b, mongoc_client_t *client, bson_error_t *error)
{
   static const char *const suffixes[] = {"files", "chunks"};
   char name[512];
   bool ok = true;
   for (size_t i = 0; ok && i < sizeof suffixes / sizeof suffixes[0]; i++) {
      snprintf (name, sizeof name, "%s.%s", b->cfg->coll, suffixes[i]);
      mongoc_collection_t *coll = mongoc_client_get_collection (client, b->cfg->db, name);
      ok = drop_collection (coll, error);
      mongoc_collection_destroy (coll);
   }
   return ok;
}

/* The spec's "before task" of the upload: an emptied bucket holding one 1-byte file, so its collections
 * and indexes exist before the timed upload. */
static bool
gridfs_reset (const bench_t *b, mongoc_client_t *client, bson_error_t *error)
{
   uint8_t one = 0;
   bson_value_t id;
   memset (&id, 0, sizeof id);
   if (!drop_bucket (b, client, error)) {
      return false;
   }
   mongoc_gridfs_bucket_t *bucket = open_bucket (b, client, error);
   if (!bucket) {
      return false;
   }
   bool ok = gridfs_put (bucket, ONE_BYTE_FILENAME, &one, 1, &id, error);
   bson_value_destroy (&id);
   mongoc_gridfs_bucket_destroy (bucket);
   return ok;
}

/* One file moved, timed alone: the upload's reset and the bucket object's construction (the spec's
 * "before task") stay outside the window, and so outside the reported wall and CPU time. */
static bool
run_gridfs (bench_t *b, mongoc_client_t *client, bool timed, uint64_t *t0, uint64_t *t1, bson_error_t *error)
{
   const bool upload = b->cfg->op == OP_GRIDFS_UPLOAD;
   struct rusage ru0, ru1;
   uint8_t *data = NULL;
   size_t len = 0;
   bson_value_t id;
   memset (&id, 0, sizeof id);
   if (upload && !gridfs_reset (b, client, error)) {
      return false;
   }
   mongoc_gridfs_bucket_t *bucket = open_bucket (b, client, error);
   if (!bucket) {
      return false;
   }
   getrusage (RUSAGE_SELF, &ru0);
   *t0 = now_ns ();
   bool ok = upload ? gridfs_put (bucket, GRIDFS_FILENAME, b->file_data, b->file_len, &id, error)
                    : gridfs_get (bucket, &b->file_id, b->file_len, &data, &len, error);
   *t1 = now_ns ();
   getrusage (RUSAGE_SELF, &ru1);
   if (ok && !upload && len != b->file_len) {
      atomic_fetch_add (&b->misses, 1);
   }
   if (timed) {
      b->gridfs_wall_ns += *t1 - *t0;
      b->gridfs_user_s += tv_s (ru1.ru_utime) - tv_s (ru0.ru_utime);
      b->gridfs_sys_s += tv_s (ru1.ru_stime) - tv_s (ru0.ru_stime);
   }
   free (data);
   bson_value_destroy (&id);
   mongoc_gridfs_bucket_destroy (bucket);
   return ok;
}

/* The seeded documents: {_id: i, ...template} or {_id: i, name: "doc-i", n: i}, like worker.py's seed. */
static void
seed_doc (const bench_t *b, bson_t *doc, int32_t i)
{
   char name[32];
   bson_init (doc);
   BSON_APPEND_INT32 (doc, "_id", i);
   if (b->tmpl) {
      bson_concat (doc, b->tmpl);
   } else {
      snprintf (name, sizeof name, "doc-%d", i);
      BSON_APPEND_UTF8 (doc, "name", name);
      BSON_APPEND_INT32 (doc, "n", i);
   }
}

/* One operation; its latency goes to *lat when timed. */
static bool
run_op (bench_t *b, mongoc_client_t *client, mongoc_collection_t *coll, long i, uint64_t *lat)
{
   bson_error_t error = {0};
   uint64_t t0 = 0, t1 = 0;
   bool ok = true;
   const char *what = op_names[b->cfg->op];

   switch (b->cfg->op) {
   case OP_FIND_ONE: {
      bson_t filter;
      const bson_t *doc;
      bson_init (&filter);
      BSON_APPEND_INT32 (&filter, "_id", (int32_t) (i % b->cfg->seed_docs));
      t0 = now_ns ();
      mongoc_cursor_t *cur = mongoc_collection_find_with_opts (coll, &filter, &b->find_one_opts, NULL);
      bool found = mongoc_cursor_next (cur, &doc);
      ok = !mongoc_cursor_error (cur, &error);
      mongoc_cursor_destroy (cur);
      t1 = now_ns ();
      bson_destroy (&filter);
      if (ok && !found) {
         atomic_fetch_add (&b->misses, 1);
      }
      break;
   }
   case OP_INSERT_ONE: {
      /* libmongoc prepends a fresh ObjectId _id to a document that has none, as PyMongo does. */
      bson_t small;
      const bson_t *doc = b->tmpl;
      if (!doc) {
         bson_init (&small);
         BSON_APPEND_UTF8 (&small, "name", "bench");
         BSON_APPEND_INT64 (&small, "n", i);
         doc = &small;
      }
      t0 = now_ns ();
      ok = mongoc_collection_insert_one (coll, doc, NULL, NULL, &error);
      t1 = now_ns ();
      if (doc == &small) {
         bson_destroy (&small);
      }
      break;
   }
   case OP_COMMAND: {
      bson_t reply;
      t0 = now_ns ();
      ok = mongoc_client_command_simple (client, "admin", &b->hello, NULL, &reply, &error);
      bson_destroy (&reply);
      t1 = now_ns ();
      break;
   }
   case OP_FIND_MANY: {
      const bson_t *doc;
      int64_t n = 0;
      t0 = now_ns ();
      mongoc_cursor_t *cur = mongoc_collection_find_with_opts (coll, &b->empty, NULL, NULL);
      while (mongoc_cursor_next (cur, &doc)) {
         n++;
      }
      ok = !mongoc_cursor_error (cur, &error);
      mongoc_cursor_destroy (cur);
      t1 = now_ns ();
      if (ok && n != b->docs_per_cursor) {
         atomic_fetch_add (&b->misses, 1);
      }
      break;
   }
   case OP_BULK_INSERT:
      t0 = now_ns ();
      ok = mongoc_collection_insert_many (coll, b->batch_docs, (size_t) b->cfg->batch, NULL, NULL, &error);
      t1 = now_ns ();
      break;
   case OP_GRIDFS_UPLOAD:
   case OP_GRIDFS_DOWNLOAD:
      ok = run_gridfs (b, client, lat != NULL, &t0, &t1, &error);
      break;
   case OP_COUNT:
   default:
      ok = false;
      bson_set_error (&error, 0, 0, "unknown op");
      break;
   }
   if (!ok) {
      record_failure (b, what, &error);
   } else if (lat) {
      *lat = t1 - t0;
   }
   return ok;
}

static void
run_phase (bench_t *b, mongoc_client_t *client, mongoc_collection_t *coll, atomic_long *next, long total,
           uint64_t *lat)
{
   while (!atomic_load (&b->failed)) {
      long i = atomic_fetch_add (next, 1);
      if (i >= total || !run_op (b, client, coll, i, lat ? &lat[i] : NULL)) {
         return;
      }
   }
}

static void *
thread_main (void *arg)
{
   bench_t *b = arg;
   /* Each thread keeps one pooled client for the whole run, like a C worker of the driver would. */
   mongoc_client_t *client = mongoc_client_pool_pop (b->pool);
   mongoc_collection_t *coll = mongoc_client_get_collection (client, b->cfg->db, b->cfg->coll);
   run_phase (b, client, coll, &b->next_warm, b->cfg->warmup, NULL);
   pthread_barrier_wait (&b->warmed);
   pthread_barrier_wait (&b->go);
   run_phase (b, client, coll, &b->next_timed, b->cfg->ops, b->lat_ns);
   pthread_barrier_wait (&b->finished);
   mongoc_collection_destroy (coll);
   mongoc_client_pool_push (b->pool, client);
   return NULL;
}

static bool
drop_collection (mongoc_collection_t *coll, bson_error_t *error)
{
   /* Servers before 7.0 answer NamespaceNotFound for a collection that does not exist: nothing to do. */
   return mongoc_collection_drop (coll, error) || error->code == 26 || strstr (error->message, "ns not found");
}

static bool
has_id (mongoc_collection_t *coll, int32_t id, bool *found, bson_error_t *error)
{
   bson_t filter;
   const bson_t *doc;
   bson_init (&filter);
   BSON_APPEND_INT32 (&filter, "_id", id);
   mongoc_cursor_t *cur = mongoc_collection_find_with_opts (coll, &filter, NULL, NULL);
   *found = mongoc_cursor_next (cur, &doc);
   bool ok = !mongoc_cursor_error (cur, error);
   mongoc_cursor_destroy (cur);
   bson_destroy (&filter);
   return ok;
}

/* Before timing: the find ops need S documents with _id 0..S-1 (kept when already there, as the Python
 * harness leaves them); the insert ops start from an empty collection. */
static void
prepare (bench_t *b)
{
   const config_t *cfg = b->cfg;
   bson_error_t error = {0};
   mongoc_client_t *client = mongoc_client_pool_pop (b->pool);
   mongoc_collection_t *coll = mongoc_client_get_collection (client, cfg->db, cfg->coll);
   bool ok = true;

   if (cfg->op == OP_FIND_ONE || cfg->op == OP_FIND_MANY) {
      int64_t count = mongoc_collection_count_documents (coll, &b->empty, NULL, NULL, NULL, &error);
      bool first = false, last = false;
      ok = count >= 0 && has_id (coll, 0, &first, &error) &&
           has_id (coll, (int32_t) (cfg->seed_docs - 1), &last, &error);
      if (ok && !(count == cfg->seed_docs && first && last)) {
         ok = drop_collection (coll, &error);
         bson_t *docs = calloc (SEED_BATCH, sizeof *docs);
         const bson_t **ptrs = calloc (SEED_BATCH, sizeof *ptrs);
         if (!docs || !ptrs) {
            die ("%s", "out of memory");
         }
         for (long start = 0; ok && start < cfg->seed_docs; start += SEED_BATCH) {
            long n = cfg->seed_docs - start < SEED_BATCH ? cfg->seed_docs - start : SEED_BATCH;
            for (long j = 0; j < n; j++) {
               seed_doc (b, &docs[j], (int32_t) (start + j));
               ptrs[j] = &docs[j];
            }
            ok = mongoc_collection_insert_many (coll, ptrs, (size_t) n, NULL, NULL, &error);
            for (long j = 0; j < n; j++) {
               bson_destroy (&docs[j]);
            }
         }
         free (docs);
         free (ptrs);
      }
      b->docs_per_cursor = cfg->seed_docs;
   } else if (cfg->op == OP_INSERT_ONE || cfg->op == OP_BULK_INSERT) {
      ok = drop_collection (coll, &error);
   } else if (cfg->op == OP_GRIDFS_DOWNLOAD) {
      /* The spec's setup: the file in a fresh bucket, its _id recorded. */
      mongoc_gridfs_bucket_t *bucket = NULL;
      ok = drop_bucket (b, client, &error) && (bucket = open_bucket (b, client, &error)) &&
           gridfs_put (bucket, GRIDFS_FILENAME, b->file_data, b->file_len, &b->file_id, &error);
      if (bucket) {
         mongoc_gridfs_bucket_destroy (bucket);
      }
   }
   mongoc_collection_destroy (coll);
   mongoc_client_pool_push (b->pool, client);
   if (!ok) {
      die ("preparing the collection failed: %s", error.message);
   }
}

static int64_t
count_docs (bench_t *b)
{
   bson_error_t error = {0};
   mongoc_client_t *client = mongoc_client_pool_pop (b->pool);
   mongoc_collection_t *coll = mongoc_client_get_collection (client, b->cfg->db, b->cfg->coll);
   int64_t n = mongoc_collection_count_documents (coll, &b->empty, NULL, NULL, NULL, &error);
   mongoc_collection_destroy (coll);
   mongoc_client_pool_push (b->pool, client);
   if (n < 0) {
      die ("counting documents failed: %s", error.message);
   }
   return n;
}

static bson_t *
load_doc (const char *path)
{
   FILE *f = fopen (path, "rb");
   if (!f) {
      die ("cannot open --doc file: %s", strerror (errno));
   }
   size_t cap = 1 << 16, len = 0;
   uint8_t *data = malloc (cap);
   for (size_t r; data && (r = fread (data + len, 1, cap - len, f)) > 0;) {
      len += r;
      if (len == cap) {
         uint8_t *bigger = realloc (data, cap * 2);
         if (!bigger) {
            free (data);
         }
         data = bigger;
         cap *= 2;
      }
   }
   bool read_error = ferror (f);
   fclose (f);
   if (!data || read_error) {
      die ("cannot read --doc file %s", path);
   }
   bson_error_t error;
   bson_t *parsed = bson_new_from_json (data, (ssize_t) len, &error);
   free (data);
   if (!parsed) {
      die ("--doc is not a JSON document: %s", error.message);
   }
   bson_t *doc = bson_new ();
   bson_copy_to_excluding_noinit (parsed, doc, "_id", NULL);
   bson_destroy (parsed);
   return doc;
}

/* The GridFS ops' file, or its first max_bytes (-1: all of it), in memory. */
static uint8_t *
load_file (const char *path, long max_bytes, size_t *len)
{
   struct stat st;
   FILE *f = fopen (path, "rb");
   if (!f || fstat (fileno (f), &st) != 0) {
      die ("cannot open --doc file %s: %s", path, strerror (errno));
   }
   if (st.st_size < 1 || (max_bytes > 0 && max_bytes > st.st_size)) {
      die ("--doc file %s holds %lld bytes, --bytes asks for %ld", path, (long long) st.st_size, max_bytes);
   }
   size_t n = max_bytes > 0 ? (size_t) max_bytes : (size_t) st.st_size;
   uint8_t *data = malloc (n);
   if (!data) {
      die ("%s", "out of memory");
   }
   if (fread (data, 1, n, f) != n) {
      die ("cannot read --doc file %s", path);
   }
   fclose (f);
   *len = n;
   return data;
}

static int
cmp_u64 (const void *a, const void *b)
{
   uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
   return x < y ? -1 : x > y;
}

/* Nearest rank, as worker.py: a reported percentile is a latency some operation really had. */
static double
percentile_us (const uint64_t *sorted, long n, double p)
{
   double rank = p * (double) n;
   long k = (long) rank;
   if ((double) k < rank) {
      k++; /* ceil without libm */
   }
   k = k < 1 ? 0 : (k > n ? n - 1 : k - 1);
   return (double) sorted[k] / 1000.0;
}

static void
usage (const char *msg)
{
   fprintf (stderr,
            "ceiling: %s\nusage: ceiling --uri URI --op find_one|insert_one|command|find_many|bulk_insert|\n"
            "       gridfs_upload|gridfs_download --concurrency N --ops M [--warmup W] [--pool P] [--doc FILE]\n"
            "       [--batch K] [--db DB] [--coll COLL] [--seed-docs S] [--bytes B]\n"
            "       (gridfs ops: --doc is the file to move, --coll the bucket, --bytes its first B bytes,\n"
            "       --concurrency 1)\n",
            msg);
   exit (2);
}

static long
parse_long (const char *s, const char *name, long min)
{
   char *end;
   errno = 0;
   long v = strtol (s, &end, 10);
   if (errno || *end || end == s || v < min) {
      fprintf (stderr, "ceiling: %s must be an integer >= %ld\n", name, min);
      exit (2);
   }
   return v;
}

static void
parse_args (int argc, char **argv, config_t *cfg)
{
   static char default_coll[64];
   const char *op = NULL;
   memset (cfg, 0, sizeof *cfg);
   cfg->concurrency = cfg->ops = -1;
   cfg->warmup = -1;
   cfg->file_bytes = -1;
   cfg->pool = 100;
   cfg->batch = 10000; /* the spec's small-document bulk insert */
   cfg->seed_docs = 1000;
   cfg->db = "asyncmongo_bench";
   for (int i = 1; i < argc; i++) {
      const char *a = argv[i];
      if (i + 1 >= argc) {
         usage ("every option takes a value");
      }
      const char *v = argv[++i];
      if (!strcmp (a, "--uri")) cfg->uri = v;
      else if (!strcmp (a, "--op")) op = v;
      else if (!strcmp (a, "--concurrency")) cfg->concurrency = parse_long (v, a, 1);
      else if (!strcmp (a, "--ops")) cfg->ops = parse_long (v, a, 1);
      else if (!strcmp (a, "--warmup")) cfg->warmup = parse_long (v, a, 0);
      else if (!strcmp (a, "--pool")) cfg->pool = parse_long (v, a, 1);
      else if (!strcmp (a, "--doc")) cfg->doc_path = v;
      else if (!strcmp (a, "--batch")) cfg->batch = parse_long (v, a, 1);
      else if (!strcmp (a, "--db")) cfg->db = v;
      else if (!strcmp (a, "--coll")) cfg->coll = v;
      else if (!strcmp (a, "--seed-docs")) cfg->seed_docs = parse_long (v, a, 1);
      else if (!strcmp (a, "--bytes")) cfg->file_bytes = parse_long (v, a, 1);
      else usage ("unknown option");
   }
   if (!cfg->uri || !op || cfg->concurrency < 0 || cfg->ops < 0) {
      usage ("--uri, --op, --concurrency and --ops are required");
   }
   for (cfg->op = 0; cfg->op < OP_COUNT && strcmp (op_names[cfg->op], op); cfg->op++) {
   }
   if (cfg->op == OP_COUNT) {
      usage ("unknown --op");
   }
   if (cfg->seed_docs > INT32_MAX) {
      usage ("--seed-docs is too large");
   }
   if (IS_GRIDFS (cfg->op) && (!cfg->doc_path || cfg->concurrency != 1)) {
      /* One file at a time: each is timed alone, between the untimed resets of the spec's phases. */
      usage ("the gridfs ops need --doc FILE and --concurrency 1");
   }
   if (!IS_GRIDFS (cfg->op) && cfg->file_bytes > 0) {
      usage ("--bytes is for the gridfs ops");
   }
   if (cfg->warmup < 0) {
      cfg->warmup = cfg->ops / 10 > cfg->concurrency ? cfg->ops / 10 : cfg->concurrency;
   }
   if (!cfg->coll) {
      snprintf (default_coll, sizeof default_coll, "ceiling_%s", op_names[cfg->op]);
      cfg->coll = default_coll;
   }
}

int
main (int argc, char **argv)
{
   config_t cfg;
   bench_t b;
   bson_error_t error;

   parse_args (argc, argv, &cfg);
   mongoc_log_set_handler (log_to_stderr, NULL);
   mongoc_init ();
   memset (&b, 0, sizeof b);
   b.cfg = &cfg;
   pthread_mutex_init (&b.err_lock, NULL);
   bson_init (&b.find_one_opts);
   BSON_APPEND_INT64 (&b.find_one_opts, "limit", 1);
   BSON_APPEND_BOOL (&b.find_one_opts, "singleBatch", true);
   bson_init (&b.hello);
   BSON_APPEND_BOOL (&b.hello, "hello", true);
   bson_init (&b.empty);

   bson_t *tmpl = NULL;
   if (IS_GRIDFS (cfg.op)) {
      b.file_data = load_file (cfg.doc_path, cfg.file_bytes, &b.file_len);
   } else if (cfg.doc_path) {
      tmpl = load_doc (cfg.doc_path);
   }
   b.tmpl = tmpl;
   if (cfg.op == OP_BULK_INSERT) {
      if (!tmpl) {
         tmpl = bson_new ();
         BSON_APPEND_UTF8 (tmpl, "name", "bench");
         BSON_APPEND_INT32 (tmpl, "n", 0);
      }
      b.batch_docs = calloc ((size_t) cfg.batch, sizeof *b.batch_docs);
      if (!b.batch_docs) {
         die ("%s", "out of memory");
      }
      for (long i = 0; i < cfg.batch; i++) {
         b.batch_docs[i] = tmpl;
      }
   }

   mongoc_uri_t *uri = mongoc_uri_new_with_error (cfg.uri, &error);
   if (!uri) {
      die ("invalid --uri: %s", error.message);
   }
   if (!mongoc_uri_set_option_as_int32 (uri, MONGOC_URI_MAXPOOLSIZE, (int32_t) cfg.pool)) {
      die ("%s", "cannot set maxPoolSize");
   }
   b.pool = mongoc_client_pool_new (uri);
   if (!b.pool) {
      die ("%s", "cannot create the client pool");
   }
   mongoc_client_pool_set_error_api (b.pool, MONGOC_ERROR_API_VERSION_2);
   prepare (&b);

   long nthreads = cfg.concurrency < cfg.pool ? cfg.concurrency : cfg.pool;
   b.lat_ns = calloc ((size_t) cfg.ops, sizeof *b.lat_ns);
   pthread_t *threads = calloc ((size_t) nthreads, sizeof *threads);
   if (!b.lat_ns || !threads) {
      die ("%s", "out of memory");
   }
   if (pthread_barrier_init (&b.warmed, NULL, (unsigned) nthreads + 1) ||
       pthread_barrier_init (&b.go, NULL, (unsigned) nthreads + 1) ||
       pthread_barrier_init (&b.finished, NULL, (unsigned) nthreads + 1)) {
      die ("%s", "cannot create barriers");
   }
   for (long i = 0; i < nthreads; i++) {
      if (pthread_create (&threads[i], NULL, thread_main, &b) != 0) {
         /* the threads already started wait at a barrier that can no longer fill: leave now */
         fprintf (stderr, "ceiling: cannot start thread %ld of %ld\n", i + 1, nthreads);
         _exit (1);
      }
   }

   struct rusage ru0, ru1;
   pthread_barrier_wait (&b.warmed);
   getrusage (RUSAGE_SELF, &ru0);
   uint64_t w0 = now_ns ();
   pthread_barrier_wait (&b.go);
   pthread_barrier_wait (&b.finished);
   uint64_t w1 = now_ns ();
   getrusage (RUSAGE_SELF, &ru1);
   for (long i = 0; i < nthreads; i++) {
      pthread_join (threads[i], NULL);
   }
   if (atomic_load (&b.failed)) {
      die ("%s", b.err);
   }

   long n = cfg.ops;
   double wall = (double) (w1 - w0) / 1e9;
   double user = tv_s (ru1.ru_utime) - tv_s (ru0.ru_utime);
   double sys = tv_s (ru1.ru_stime) - tv_s (ru0.ru_stime);
   if (IS_GRIDFS (cfg.op)) {
      /* Only the files' own windows: the resets between them are the spec's untimed "before task". */
      wall = (double) b.gridfs_wall_ns / 1e9;
      user = b.gridfs_user_s;
      sys = b.gridfs_sys_s;
   }
   double sum = 0;
   qsort (b.lat_ns, (size_t) n, sizeof *b.lat_ns, cmp_u64);
   for (long i = 0; i < n; i++) {
      sum += (double) b.lat_ns[i];
   }

   printf ("{\"driver\": \"ceiling\", \"version\": \"%s\", \"op\": \"%s\", \"concurrency\": %ld, "
           "\"pool_size\": %ld, \"threads\": %ld, \"ops\": %ld, \"warmup_ops\": %ld, \"wall_s\": %.6f, "
           "\"ops_per_s\": %.3f, \"cpu_s\": %.6f, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, "
           "\"cpu_us_per_op\": %.3f, \"lat_p50_us\": %.3f, \"lat_p99_us\": %.3f, \"lat_mean_us\": %.3f, "
           "\"lat_max_us\": %.3f, \"misses\": %ld, \"max_rss_kb\": %ld",
           mongoc_get_version (), op_names[cfg.op], cfg.concurrency, cfg.pool, nthreads, n, cfg.warmup, wall,
           wall > 0 ? (double) n / wall : 0.0, user + sys, user, sys, (user + sys) / (double) n * 1e6,
           percentile_us (b.lat_ns, n, 0.50), percentile_us (b.lat_ns, n, 0.99), sum / (double) n / 1000.0,
           (double) b.lat_ns[n - 1] / 1000.0, atomic_load (&b.misses), ru1.ru_maxrss);
   if (cfg.op == OP_BULK_INSERT) {
      printf (", \"batch\": %ld", cfg.batch);
   }
   if (cfg.op == OP_FIND_ONE || cfg.op == OP_FIND_MANY) {
      printf (", \"seed_docs\": %ld", cfg.seed_docs);
   }
   if (cfg.op == OP_INSERT_ONE || cfg.op == OP_BULK_INSERT) {
      printf (", \"docs_in_collection\": %lld", (long long) count_docs (&b));
   }
   if (IS_GRIDFS (cfg.op)) {
      printf (", \"file_bytes\": %zu", b.file_len);
   }
   printf ("}\n");
   fflush (stdout);

   mongoc_client_pool_destroy (b.pool);
   mongoc_uri_destroy (uri);
   if (tmpl) {
      bson_destroy (tmpl);
   }
   free (b.batch_docs);
   free (b.file_data);
   bson_value_destroy (&b.file_id);
   free (b.lat_ns);
   free (threads);
   bson_destroy (&b.find_one_opts);
   bson_destroy (&b.hello);
   bson_destroy (&b.empty);
   mongoc_cleanup ();
   return 0;
}
