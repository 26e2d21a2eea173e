/* asyncmongo.h: shared types and prototypes of the C core.
 * Ownership markers on prototypes: NEW (returns a new reference), BORROWED (returns a borrowed one),
 * STEALS(n) (takes over the reference passed as argument n).
 * Suffixes say which thread may call a function, and a reader may trust them:
 *   _nogil   runs on a native thread without the GIL (a worker, the spawner, a teardown thread) and
 *            touches no Python API and no PyObject at all; it may block.
 *   _locked  needs the named native mutex held.
 * A function without a suffix runs on a Python thread with the GIL held, unless its comment says
 * "pure C, any thread": then it touches no Python API, never blocks on I/O, and is safe both ways. */
#ifndef ASYNCMONGO_H
#define ASYNCMONGO_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* The protocol between the Python package and the core. Every name here is exported by the module
 * (module.c) under the same name without the AMONGO_ prefix, typed in asyncmongo/_core.pyi, and used
 * by name on both sides. */

/* Operation kinds: which libmongoc entry point a worker calls. */
enum {
    AMONGO_OP_COMMAND = 0,    /* mongoc_client_command_with_opts: no read/write logic */
    AMONGO_OP_READ = 1,       /* mongoc_client_read_command_with_opts: retryable reads, read concern */
    AMONGO_OP_WRITE = 2,      /* mongoc_client_write_command_with_opts: retryable writes, write concern */
    AMONGO_OP_READ_WRITE = 3, /* mongoc_client_read_write_command_with_opts */
    AMONGO_OP_INSERT = 4,     /* bulk insert of concatenated BSON documents (OP_MSG document sequence) */
    AMONGO_OP_BULK = 5,       /* bulk write of concatenated operation documents (bulk.c) */
    AMONGO_OP_BARRIER = 6,    /* internal: resolves when every worker of a closing client has exited */
    /* An explicit session's life (sessions.c); cmd holds the options, `session` the session. */
    AMONGO_OP_SESSION_START = 7,  /* opts {causalConsistency, snapshot}: the result is its capsule */
    AMONGO_OP_TXN_START = 8,      /* opts {readConcern, writeConcern, readPreference, maxCommitTimeMS} */
    AMONGO_OP_TXN_COMMIT = 9,     /* the server's reply is the result (its error labels matter) */
    AMONGO_OP_TXN_ABORT = 10,
    AMONGO_OP_SESSION_END = 11,   /* aborts an open transaction, gives the client back */
    AMONGO_OP_SELECT_SERVER = 12, /* server selection only (topology.c): a writable server, or one
                                   * for the job's read preference; the result is RES_SERVER */
    AMONGO_OP_SDAM = 13,          /* internal: carries SDAM events to a loop (sdam.c) */
    AMONGO_OP_COUNT
};

/* What the loop thread makes of a finished job. */
enum {
    AMONGO_RES_DOC = 0,    /* the reply, decoded with the job's codec options */
    AMONGO_RES_FIRST = 1,  /* first document of the cursor batch, or None */
    AMONGO_RES_CURSOR = 2, /* a CursorBatch (module.c): id, namespace, documents, server, session */
    AMONGO_RES_WRITE = 3,  /* the reply as a dict; writeErrors raise WriteError / DuplicateKeyError */
    AMONGO_RES_BULK = 4,   /* the reply as a dict; writeErrors raise BulkWriteError */
    AMONGO_RES_NONE = 5,   /* None */
    AMONGO_RES_STREAM = 6, /* a CursorBatch with postBatchResumeToken and operationTime when the
                            * reply has them (change streams resume by them) */
    AMONGO_RES_SESSION = 7, /* AMONGO_OP_SESSION_START: the new session's capsule; else None */
    AMONGO_RES_SERVER = 8,  /* AMONGO_OP_SELECT_SERVER: the selected server's ServerFacts */
    AMONGO_RES_COUNT
};

/* The operations of an AMONGO_OP_BULK job: each is a document {op, d, u, o} (bulk.c). */
enum {
    AMONGO_BULK_INSERT = 0,      /* d: the document */
    AMONGO_BULK_UPDATE_ONE = 1,  /* d: filter, u: update (document or pipeline), o: options */
    AMONGO_BULK_UPDATE_MANY = 2,
    AMONGO_BULK_REPLACE_ONE = 3, /* u: the replacement */
    AMONGO_BULK_DELETE_ONE = 4,  /* d: filter, o: options */
    AMONGO_BULK_DELETE_MANY = 5,
};

/* SDAM event kinds (sdam.c): the `kind` of an SdamEvent, one per libmongoc SDAM callback. */
enum {
    AMONGO_SDAM_SERVER_OPENING = 0,
    AMONGO_SDAM_SERVER_CLOSED = 1,
    AMONGO_SDAM_SERVER_CHANGED = 2,     /* previous, new: ServerFacts */
    AMONGO_SDAM_TOPOLOGY_OPENING = 3,
    AMONGO_SDAM_TOPOLOGY_CLOSED = 4,
    AMONGO_SDAM_TOPOLOGY_CHANGED = 5,   /* previous, new: TopologyFacts */
    AMONGO_SDAM_HEARTBEAT_STARTED = 6,  /* address, awaited */
    AMONGO_SDAM_HEARTBEAT_SUCCEEDED = 7, /* address, awaited, duration_us, reply */
    AMONGO_SDAM_HEARTBEAT_FAILED = 8,   /* address, awaited, duration_us, error */
};

/* Job flags. */
#define AMONGO_FLAG_PIN 0x1      /* select a server first, run there, report its id (cursor owners) */
#define AMONGO_FLAG_BYPASS 0x4   /* bulk writes: bypassDocumentValidation */
#define AMONGO_FLAG_QUIET 0x8    /* fire and forget (killCursors): resolve with None whatever happens */
#define AMONGO_FLAG_APM 0x10     /* internal: record command monitoring events for the listeners */
/* Client Side Operations Timeout (the job has a deadline): */
#define AMONGO_FLAG_MAX_TIME 0x20 /* append maxTimeMS = time left - the server's round trip; fail,
                                   * unsent, when no time is left for it (commands.c) */
#define AMONGO_FLAG_RETRY 0x40    /* retry a retryable error while time is left (reads; writes
                                   * with AMONGO_FLAG_TXN_NUMBER) */
#define AMONGO_FLAG_TXN_NUMBER 0x80 /* a retryable write: sent in the worker's own session with a
                                     * txnNumber of its own, the same for every attempt */
#define AMONGO_FLAG_MAX_AWAIT 0x100 /* with AMONGO_FLAG_MAX_TIME, the getMore of an awaitData cursor:
                                     * maxTimeMS = min(its maxTimeMS (maxAwaitTimeMS), time left -
                                     * the server's round trip) */

/* Wake-up paths of a completion queue. */
#define AMONGO_WAKE_EVENTFD 0    /* worker writes an eventfd the loop watches: never waits for the GIL */
#define AMONGO_WAKE_THREADSAFE 1 /* worker takes the GIL and calls loop.call_soon_threadsafe */

/* Error domains of our own, beside libmongoc's. */
#define AMONGO_ERROR_DOMAIN_CLOSED 1000 /* the client was closed before the job ran */
#define AMONGO_ERROR_DOMAIN_TIMEOUT 1001 /* the job's deadline passed before it was sent (code 50,
                                          * as the server's MaxTimeMSExpired) */

/* A growable byte buffer (codec.h): encoded documents are appended at len, several end to end
 * (insert_many sends them concatenated). data is malloc'd: the owner may free it on any thread,
 * without the GIL. A zeroed struct is a valid empty buffer. */
typedef struct AmongoBuffer {
    uint8_t *data;
    size_t len, cap;
} AmongoBuffer;

/* The server's largest document (MongoDB's default, which PyMongo assumes too), and the room a
 * command may take beyond it. */
#define AMONGO_MAX_BSON_SIZE (16 * 1024 * 1024)
#define AMONGO_COMMAND_OVERHEAD 16382

typedef struct AmongoQueue AmongoQueue;
typedef struct AmongoPool AmongoPool;
typedef struct AmongoSdam AmongoSdam;

/* A FIFO of jobs linked through their ->next: the pool's run queue, a session's waiting jobs, a
 * loop's completions. Whoever owns one says which mutex guards it; its helpers (after AmongoJob)
 * take none. A zeroed one is empty. */
typedef struct AmongoJobList {
    struct AmongoJob *head, *tail;
} AmongoJobList;

/* A client's outcome counts (its stats()): written on loop threads with the GIL held, which is
 * what orders them. Every submitted job ends in exactly one of the three others. */
typedef struct AmongoStats {
    int64_t submitted;
    int64_t completed;  /* resolved with a result */
    int64_t failed;     /* resolved with an exception */
    int64_t cancelled;  /* its future was cancelled (taken out unsent, or its result dropped), or
                         * its loop closed before it could be resolved */
} AmongoStats;

/* What a worker thread works with: a libmongoc client of the pool, and the session in which the
 * core numbers retryable writes under a deadline (AMONGO_FLAG_TXN_NUMBER, commands.c). A worker
 * that exits leaves its context with the pool for the next worker, and it goes back to libmongoc
 * only when the pool is destroyed: a server session whose txnNumbers the core chose must never
 * return to libmongoc's session pool while libmongoc can still number writes in it. */
typedef struct AmongoWorkerCtx {
    struct AmongoWorkerCtx *next; /* in the pool's list of idle contexts */
    mongoc_client_t *client;
    mongoc_client_session_t *txn_session; /* started on first need, or NULL */
    int64_t txn_number;                   /* the last txnNumber sent in it */
} AmongoWorkerCtx;

/* A libmongoc session on a libmongoc client of its own (sessions.c). Two kinds share it:
 * - a cursor's: libmongoc gives every command an implicit session, and a server refuses a getMore
 *   sent in another session than the command that opened the cursor; so a cursor-opening job takes
 *   a client of its own from the pool and starts a session on it, and the cursor keeps both (a
 *   capsule held by the Python cursor) for its getMores and its killCursors, until the cursor is
 *   exhausted or killed;
 * - the user's (start_session), which lives until ended.
 * Its jobs run on any worker, one at a time and in the order they were submitted: a job submitted
 * while another of the session's is queued or running waits in the session's own queue, and the
 * worker that finishes a job runs the next (sessions.c). A cancelled job still queued is taken
 * out and never sent; a running one finishes before the next starts. */
typedef struct AmongoSession {
    pthread_mutex_t mu;          /* protects waiting and busy (held briefly, GIL-free) */
    AmongoJobList waiting;       /* jobs waiting their turn, in submission order */
    bool busy;                   /* a job of the session is in the pool's queue or running */
    mongoc_client_t *client;     /* NULL once released back to the pool */
    mongoc_client_session_t *cs;
    mongoc_client_pool_t *mpool;
    AmongoPool *pool;            /* counts live sessions: libmongoc's pool outlives them */
    long fork_generation;
    bool user;                   /* an explicit session of the user's (start_session): it lives until
                                  * ended, never released by the end of a cursor */
} AmongoSession;

/* A command monitoring event, recorded on the worker (plain C) and delivered on the loop thread. */
typedef struct AmongoEvent {
    struct AmongoEvent *next;
    int kind;                /* 0 started, 1 succeeded, 2 failed */
    char command_name[64];
    char database[128];
    char host[256];
    uint16_t port;
    int64_t request_id;
    int64_t operation_id;
    int64_t duration_us;
    int32_t server_connection_id;
    bson_t doc;              /* the command (started) or the reply (succeeded, failed) */
    bson_error_t error;
} AmongoEvent;

/* One operation. Inputs are set on the loop thread at submit and read-only afterwards; outputs are
 * written by exactly one worker, then read on the loop thread after the completion queue hands the
 * job over (its mutex orders the two). PyObject fields are touched on the loop thread only. */
typedef struct AmongoJob {
    struct AmongoJob *next; /* link in the pool's run queue, then in a completion queue */
    int64_t queued_at_us;   /* when it entered the run queue (the spawner's clock, workers.c) */
    int op;
    int result_kind;
    unsigned flags;
    uint32_t server_id;     /* run on this server (getMore, killCursors), 0 for any */
    int64_t deadline_us;    /* Client Side Operations Timeout: the monotonic time (libmongoc's
                             * clock, bson_get_monotonic_time) by which it must end; 0: none */
    int32_t socket_timeout_ms; /* the client's, to tell a timeout from a reset (same libmongoc text) */

    /* inputs: borrowed from the Python objects below, which the job keeps alive, or (cmd) from
     * `encoded`, the job's own buffer when the core encoded the command or documents itself */
    AmongoBuffer encoded;
    const char *db;
    const char *coll;
    const uint8_t *cmd;
    size_t cmd_len;
    const uint8_t *opts;
    size_t opts_len;
    const uint8_t *read_prefs; /* {mode, tags, maxStalenessSeconds} of the operation, or NULL */
    size_t read_prefs_len;

    /* strong references, loop thread only */
    PyObject *future;
    PyObject *db_obj, *coll_obj, *cmd_obj, *opts_obj, *read_prefs_obj;
    PyObject *codec_options;
    PyObject *owner;        /* the AmongoClient: keeps the pool alive while the job exists */
    AmongoStats *stats;     /* the owner's counts, or NULL (internal jobs) */
    PyObject *apm_sink;     /* callable(events) for command monitoring, or NULL */
    AmongoQueue *queue;     /* completion queue of the future's loop */
    PyObject *session_obj;  /* capsule of the cursor's session (getMore, killCursors), or NULL */
    AmongoSession *session; /* borrowed from session_obj: used by the worker */
    mongoc_client_pool_t *mpool;  /* where a cursor-opening job takes its session's client */
    AmongoPool *pool;
    AmongoSdam *sdam;       /* AMONGO_OP_SDAM: the recorder whose events it carries (a reference) */

    /* outputs, written by the worker */
    bool ok;
    bool has_reply;
    bson_error_t error;
    bson_t reply;
    const uint8_t *first;   /* AMONGO_RES_FIRST: the first batch document, inside reply */
    uint8_t *batch;         /* AMONGO_RES_CURSOR: the batch documents, concatenated (malloc) */
    size_t batch_len;
    int64_t cursor_id;
    uint32_t out_server_id;
    int64_t elapsed_us;     /* time the worker spent in libmongoc */
    int64_t failed_attempt_us; /* how long the job's last failed command took, -1: none failed */
    AmongoEvent *events, *events_tail; /* AMONGO_FLAG_APM: recorded in order */
    AmongoSession *out_session;  /* a cursor opened (AMONGO_FLAG_PIN): its session */
} AmongoJob;

/* The FIFO of jobs (AmongoJobList, above), linked through ->next. */
static inline void
amongo_jobs_append(AmongoJobList *l, AmongoJob *job)
{
    job->next = NULL;
    if (l->tail)
        l->tail->next = job;
    else
        l->head = job;
    l->tail = job;
}

/* The first job, taken out, or NULL. */
static inline AmongoJob *
amongo_jobs_pop(AmongoJobList *l)
{
    AmongoJob *job = l->head;
    if (job) {
        l->head = job->next;
        if (!l->head)
            l->tail = NULL;
        job->next = NULL;
    }
    return job;
}

/* The job of `future` (or the job `job_wanted`, when future is NULL), taken out, or NULL. */
static inline AmongoJob *
amongo_jobs_take(AmongoJobList *l, const PyObject *future, const AmongoJob *job_wanted)
{
    AmongoJob *prev = NULL, *job = l->head;
    while (job && (future ? job->future != future : job != job_wanted)) {
        prev = job;
        job = job->next;
    }
    if (job) {
        if (prev)
            prev->next = job->next;
        else
            l->head = job->next;
        if (l->tail == job)
            l->tail = prev;
        job->next = NULL;
    }
    return job;
}

/* Everything, taken out (a list through ->next). */
static inline AmongoJob *
amongo_jobs_take_all(AmongoJobList *l)
{
    AmongoJob *all = l->head;
    l->head = l->tail = NULL;
    return all;
}

/* Module state: everything the module holds, listed once in AMONGO_STATE_OBJECTS so that traverse
 * and clear cannot drift apart. */
#define AMONGO_STATE_OBJECTS(X) \
    X(ClientType) X(QueueType) X(CursorBatchType) \
    X(ServerFactsType) X(TopologyFactsType) X(SdamEventType) \
    X(get_running_loop) X(bson_to_dict) X(decode_all) X(default_codec_options) X(logger) \
    X(str_create_future) X(str_set_result) X(str_set_exception) X(str_done) X(str_add_reader) \
    X(str_call_soon_threadsafe) X(str_drain) \
    X(exc_PyMongoError) X(exc_ConnectionFailure) X(exc_AutoReconnect) X(exc_NetworkTimeout) \
    X(exc_ServerSelectionTimeoutError) X(exc_NotPrimaryError) X(exc_OperationFailure) \
    X(exc_ExecutionTimeout) X(exc_CursorNotFound) X(exc_WriteError) X(exc_DuplicateKeyError) \
    X(exc_WriteConcernError) X(exc_WTimeoutError) X(exc_BulkWriteError) X(exc_InvalidOperation) \
    X(exc_ConfigurationError) X(exc_InvalidURI) X(exc_ProtocolError) X(exc_DocumentTooLarge) \
    /* the BSON codec (codec.c, decode.c, encode.c) */ \
    X(codec_ObjectId) X(abc_MutableMapping) X(codec_Int64) X(codec_Binary) X(codec_Code) X(codec_Regex) X(codec_DBRef) \
    X(codec_Timestamp) X(codec_MinKey) X(codec_MaxKey) X(codec_Decimal128) X(codec_DatetimeMS) \
    X(codec_UUID) X(codec_SafeUUID_unknown) X(codec_utc) X(codec_Mapping) X(codec_Pattern) \
    X(codec_CodecOptions) X(codec_dict_to_bson) X(codec_min_datetime) X(codec_max_datetime) \
    X(codec_oid_slot) X(codec_uuid_int_slot) X(codec_uuid_safe_slot) X(codec_key_cache) \
    X(codec_InvalidBSON) X(codec_InvalidDocument) X(codec_InvalidStringData) X(codec_BSONError) \
    X(codec_s_type_marker) X(codec_s_binary) X(codec_s_subtype) X(codec_s_scope) X(codec_s_inc) \
    X(codec_s_time) X(codec_s_bid) X(codec_s_flags) X(codec_s_pattern) X(codec_s_id) \
    X(codec_s_dollar_ref) X(codec_s_dollar_id) X(codec_s_dollar_db) X(codec_s_as_doc) \
    X(codec_s_utcoffset) X(codec_s_astimezone) X(codec_s_from_uuid) X(codec_s_as_uuid) \
    X(codec_s_from_bid) X(codec_s_raw) X(codec_s_encoder_map) X(codec_s_decoder_map) \
    X(codec_s_fallback_encoder)

typedef struct {
#define AMONGO_STATE_FIELD(name) PyObject *name;
    AMONGO_STATE_OBJECTS(AMONGO_STATE_FIELD)
#undef AMONGO_STATE_FIELD
} AmongoState;

/* Debug counters (uvloop's `make debug` idea): checked by the tests at teardown. */
typedef struct {
    atomic_long jobs_submitted;
    atomic_long jobs_completed;  /* resolved or discarded on a loop thread */
    atomic_long jobs_live;       /* allocated and not yet freed */
    atomic_long replies_live;    /* bson_t replies initialised and not yet destroyed */
    atomic_long workers_live;
    atomic_long workers_started;
    atomic_long wakeups;         /* eventfd writes or call_soon_threadsafe calls */
    atomic_long drains;
    atomic_long jobs_cancelled;  /* removed from the run queue before a worker took them */
} AmongoCounters;

extern AmongoCounters amongo_counters;
extern atomic_long amongo_fork_generation; /* bumped in the child after fork() */
extern atomic_int amongo_finalizing;       /* set at interpreter exit: workers stop taking the GIL */

/* module.c */
AmongoState *amongo_state_from_type(PyTypeObject *tp); /* BORROWED */
bool amongo_exiting(void); /* the interpreter is finalizing: no Python-level work in teardown */
PyObject *amongo_module_debug_counters(void);         /* NEW */

/* apm.c */
void amongo_apm_install(mongoc_client_pool_t *pool, bool commands, AmongoSdam *sdam);
void amongo_apm_set_current_nogil(AmongoJob *job);
int amongo_apm_deliver(AmongoState *st, AmongoJob *job);
void amongo_apm_free_events(AmongoJob *job);

/* topology.c: what libmongoc knows of the deployment, as plain BSON (any thread) and as
 * ServerFacts / TopologyFacts struct sequences (loop thread). */
void amongo_server_facts_append_nogil(bson_t *parent, const char *key,
                                      const mongoc_server_description_t *sd);
typedef struct {
    char host[BSON_HOST_NAME_MAX + 1];
    uint16_t port;
} AmongoAddress;
/* libmongoc lists only the servers it knows; `members` (those it opened) adds the Unknown ones. */
void amongo_topology_facts_append_nogil(bson_t *parent, const char *key,
                                        const mongoc_topology_description_t *td,
                                        const AmongoAddress *members, size_t n_members);
PyObject *amongo_facts_py(AmongoState *st, PyObject *doc); /* NEW: a decoded facts document */
PyObject *amongo_select_result(AmongoState *st, AmongoJob *job); /* NEW: RES_SERVER */
void amongo_job_run_select_nogil(AmongoJob *job, mongoc_client_t *client);
int amongo_topology_init_types(PyObject *module, AmongoState *st);

/* sdam.c: SDAM and heartbeat monitoring. libmongoc calls the callbacks on its monitor threads (and
 * on workers), GIL-free: they record plain C and hand a carrier job (AMONGO_OP_SDAM) to the loop
 * chosen by amongo_sdam_arm, whose drain delivers the events in order. The recorder also keeps the
 * latest topology description. Reference counted: the client, its pool's teardown and each
 * carrier hold one. */
AmongoSdam *amongo_sdam_new(bool record_events); /* pure C; one reference */
void amongo_sdam_set_callbacks(AmongoSdam *s, mongoc_apm_callbacks_t *cbs); /* pure C */
void amongo_sdam_incref(AmongoSdam *s);  /* pure C, any thread */
void amongo_sdam_decref(AmongoSdam *s);  /* pure C, any thread: frees at zero */
int amongo_sdam_arm(AmongoSdam *s, AmongoQueue *q, PyObject *sink, AmongoPool *pool, bool via_pool);
void amongo_sdam_close(AmongoSdam *s);   /* GIL held: no more deliveries; frees the armed carrier */
int amongo_sdam_traverse(AmongoSdam *s, visitproc visit, void *arg);
void amongo_sdam_deliver(AmongoState *st, AmongoJob *carrier); /* loop thread, from a drain */
void amongo_sdam_dropped(AmongoJob *carrier); /* loop thread: a carrier discarded undelivered */
PyObject *amongo_sdam_topology(AmongoState *st, AmongoSdam *s); /* NEW: TopologyFacts or None */
int amongo_sdam_init_types(PyObject *module, AmongoState *st); /* SdamEvent */
bool amongo_sdam_wait_writable_nogil(AmongoSdam *s, int64_t timeout_ms);

/* jobs.c */
void amongo_job_keep_reply_nogil(AmongoJob *job); /* job->reply was initialised: count it */
AmongoJob *amongo_job_new(void);
void amongo_job_free(AmongoJob *job);              /* loop thread: drops the references */
void amongo_job_run_nogil(AmongoJob *job, mongoc_client_t *client);
void amongo_job_set_closed(AmongoJob *job); /* pure C: it fails as "client closed", never run */
bool amongo_job_expired(AmongoJob *job);    /* pure C: past its deadline (then its error is set) */
void amongo_job_complete(AmongoState *st, AmongoJob *job); /* loop thread: resolves the future */
void amongo_job_discard(AmongoJob *job);           /* loop thread: drop without resolving */
int amongo_jobs_init_types(PyObject *module, AmongoState *st); /* CursorBatch */

/* workers.c (pure C) */
AmongoPool *amongo_pool_new(mongoc_client_pool_t *mpool, int max_workers);
int amongo_pool_submit(AmongoPool *pool, AmongoJob *job); /* 0, or -1 when stopping */
AmongoJob *amongo_pool_take_queued(AmongoPool *pool, PyObject *future); /* remove one queued job */
AmongoJob *amongo_pool_stop(AmongoPool *pool, AmongoJob *barrier, bool *barrier_queued);
void amongo_pool_wait_stopped_nogil(AmongoPool *pool);
void amongo_pool_release_contexts_nogil(AmongoPool *pool); /* after wait_stopped, before destroy */
void amongo_pool_free(AmongoPool *pool);
int amongo_pool_workers(AmongoPool *pool);
int amongo_pool_queued(AmongoPool *pool);
int amongo_pool_sessions(AmongoPool *pool);
void amongo_pool_activity(AmongoPool *pool, int *busy, long *running); /* workers on a job */
/* A server's round-trip estimate (ms) from libmongoc's average `average_ms` read now: the lowest of
 * the last values, 0 until two were seen (workers.c). */
int64_t amongo_pool_rtt_nogil(AmongoPool *pool, uint32_t server_id, int64_t average_ms);
void amongo_pool_session_opened(AmongoPool *pool);
void amongo_pool_session_closed(AmongoPool *pool);

/* sessions.c */
AmongoSession *amongo_session_open_nogil(AmongoJob *job, const bson_t *opts, bson_error_t *error);
void amongo_session_release(AmongoSession *s); /* pure C, any thread: ends it, client back */
void amongo_session_free(AmongoSession *s);    /* pure C, any thread: release, then free */
void amongo_job_run_session_nogil(AmongoJob *job);
bool amongo_session_enqueue(AmongoSession *s, AmongoJob *job); /* pure C: true if it must wait */
AmongoJob *amongo_session_turn_done(AmongoSession *s);        /* pure C: the next job, or NULL */
AmongoJob *amongo_session_take_waiting(AmongoSession *s, PyObject *future); /* pure C */
PyObject *amongo_session_capsule(AmongoSession *s); /* NEW; STEALS(1) */
AmongoSession *amongo_session_from_capsule(PyObject *capsule); /* BORROWED, NULL + error */

/* commands.c: AMONGO_OP_COMMAND .. AMONGO_OP_READ_WRITE */
void amongo_job_run_command_nogil(AmongoJob *job, mongoc_client_t *client);
AmongoWorkerCtx *amongo_worker_current_nogil(void); /* workers.c: the calling worker's context */
mongoc_read_prefs_t *amongo_read_prefs_nogil(const bson_t *doc); /* caller destroys, or NULL */

/* bulk.c: AMONGO_OP_INSERT and AMONGO_OP_BULK */
void amongo_job_run_insert_nogil(AmongoJob *job, mongoc_client_t *client);
void amongo_job_run_bulk_nogil(AmongoJob *job, mongoc_client_t *client);

/* stream.c (pure C): a job's socket waits end at its deadline. libmongoc's socket waits count
 * whole milliseconds and may end up to one early: within this slack of its deadline a job is out of
 * time (no retry, no new connection, and a socket error then is the deadline's timeout). */
#define AMONGO_DEADLINE_SLACK_US 2000
void amongo_stream_install_nogil(mongoc_client_t *client); /* a client just taken from the pool */
void amongo_stream_set_deadline_nogil(int64_t deadline_us); /* the calling thread's job; 0: none */

/* completion.c */
int amongo_queue_init_type(PyObject *module, AmongoState *st);
AmongoQueue *amongo_queue_get(AmongoState *st, PyObject *queues, int mode); /* BORROWED */
void amongo_queue_push_from_worker(AmongoQueue *q, AmongoJob *job); /* takes the GIL in threadsafe mode */
void amongo_queue_push(AmongoQueue *q, AmongoJob *job);             /* GIL held */
int amongo_queue_mode(AmongoQueue *q); /* pure C, any thread: AMONGO_WAKE_*, fixed once made */
void amongo_finalize_begin(void); /* GIL held, at exit: workers stop taking the GIL */
PyObject *amongo_queue_create_future(AmongoQueue *q);  /* NEW */
void amongo_queue_retain(AmongoQueue *q);   /* loop thread: a job takes a reference */
void amongo_queue_release(AmongoQueue *q);  /* loop thread: the job drops it */
int amongo_queues_sweep(PyObject *queues, bool all); /* drop queues of closed loops (or all) */
void amongo_queues_forget(PyObject *queues); /* a client's finalizer: drop them all, never raises */
PyObject *amongo_queues_stats(PyObject *queues); /* NEW list of one dict per loop's queue */

/* client.c */
int amongo_client_init_type(PyObject *module, AmongoState *st);

/* errors.c */
int amongo_errors_init(AmongoState *st);
PyObject *amongo_error_from_job(AmongoState *st, const AmongoJob *job);   /* NEW exception */
PyObject *amongo_write_error(AmongoState *st, PyObject *reply, bool bulk); /* NEW, or NULL if none */
void amongo_set_error(AmongoState *st, const bson_error_t *error);         /* raise now */

/* log.c */
void amongo_log_install(void);
void amongo_log_flush(AmongoState *st);
extern atomic_int amongo_log_pending;
static inline void amongo_log_maybe_flush(AmongoState *st)
{
    if (atomic_load_explicit(&amongo_log_pending, memory_order_relaxed))
        amongo_log_flush(st);
}

#endif
