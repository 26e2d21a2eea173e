/* client.c: the native client type over mongoc_client_pool_t: submit, cancel, close.
 * Submit runs on the loop thread: it takes the running loop's completion queue, makes the future,
 * builds a plain C job that borrows the encoded bytes (keeping their objects alive) and queues it
 * for the workers. Nothing here blocks the loop: waiting for workers happens with the GIL released,
 * and only when they are known to be finishing. */
#include "asyncmongo.h"
#include "codec.h"

#include <math.h>
#include <structmember.h>

enum { CLIENT_OPEN = 0, CLIENT_CLOSING = 1, CLIENT_CLOSED = 2 };

typedef struct {
    PyObject_HEAD
    mongoc_client_pool_t *mpool;
    AmongoPool *pool;
    PyObject *queues;    /* dict: event loop -> completion queue */
    PyObject *apm_sink;  /* callable(events) for command monitoring, or NULL */
    AmongoSdam *sdam;    /* SDAM recorder and latest topology (sdam.c): a reference */
    PyObject *sdam_sink; /* callable(events, dropped) for SDAM monitoring, or NULL */
    bool monitoring;     /* libmongoc's topology monitor was started (a client was popped) */
    int wake_mode;
    int state;
    int max_workers;
    int32_t socket_timeout_ms;
    long fork_generation;
    AmongoStats stats;   /* the outcome counts of the jobs submitted through it (stats()) */
    PyObject *weakreflist;
} AmongoClient;

static AmongoState *
client_state(AmongoClient *self)
{
    return amongo_state_from_type(Py_TYPE(self));
}

static bool
client_forked(AmongoClient *self)
{
    return self->fork_generation != atomic_load(&amongo_fork_generation);
}

static int
client_check_usable(AmongoClient *self)
{
    AmongoState *st = client_state(self);
    if (client_forked(self)) {
        PyErr_SetString(st->exc_InvalidOperation,
                        "this AsyncMongoClient was created before fork(): its connections and "
                        "threads belong to the parent process; create a new client in the child");
        return -1;
    }
    if (self->state != CLIENT_OPEN || !self->queues) {
        PyErr_SetString(st->exc_InvalidOperation, "Cannot use AsyncMongoClient after close");
        return -1;
    }
    return 0;
}

/* SDAM events are delivered on the loop of the client's latest operation (sdam.c). */
static int
client_arm_sdam(AmongoClient *self, AmongoQueue *q)
{
    if (!self->sdam_sink || !self->pool)
        return 0;
    return amongo_sdam_arm(self->sdam, q, self->sdam_sink, self->pool,
                           amongo_queue_mode(q) != AMONGO_WAKE_EVENTFD);
}

/* libmongoc's pool for `uri_string`, or NULL with InvalidURI/ConfigurationError. Opened into
 * locals and assigned to the object only on success (CPython's _sqlite habit). */
static mongoc_client_pool_t *
client_open_pool(AmongoState *st, const char *uri_string, int max_workers, bool apm,
                 AmongoSdam *sdam, int32_t *socket_timeout_ms)
{
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_string, &error);
    if (!uri) {
        PyErr_SetString(st->exc_InvalidURI, error.message);
        return NULL;
    }
    *socket_timeout_ms =
        mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, MONGOC_DEFAULT_SOCKETTIMEOUTMS);
    mongoc_client_pool_t *mpool = mongoc_client_pool_new_with_error(uri, &error);
    mongoc_uri_destroy(uri);
    if (!mpool) {
        PyErr_SetString(st->exc_ConfigurationError, error.message);
        return NULL;
    }
    mongoc_client_pool_set_error_api(mpool, MONGOC_ERROR_API_VERSION_2);
    amongo_apm_install(mpool, apm, sdam); /* before the first client leaves the pool */
    /* One client per worker, plus slack for a worker that is exiting while its successor starts,
     * one for unacknowledged writes (workers.c), and room for cursors and explicit sessions,
     * which keep a client each (sessions.c). A client opens its connection only when used, so the
     * room costs nothing until it is taken. */
    uint32_t room = max_workers > 64 ? (uint32_t)max_workers : 64;
    mongoc_client_pool_max_size(mpool, (uint32_t)max_workers + room + 2);
    return mpool;
}

/* A new client's start: discovery now if `connect` (the first pop starts libmongoc's topology
 * monitor in the background, as PyMongo's connect=True does; it does no I/O on this thread), and
 * SDAM events armed for the running loop, if any (else for the loop of the first operation). */
static int
client_start(AmongoClient *self, AmongoState *st, int connect)
{
    if (connect) {
        mongoc_client_t *c = mongoc_client_pool_pop(self->mpool);
        mongoc_client_pool_push(self->mpool, c);
        self->monitoring = true;
    }
    AmongoQueue *q = self->sdam_sink ? amongo_queue_get(st, self->queues, self->wake_mode) : NULL;
    if (!q) {
        PyErr_Clear();
        return 0;
    }
    return client_arm_sdam(self, q);
}

static PyObject *
client_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"uri", "max_workers", "wakeup", "connect", "apm_sink", "sdam_sink",
                             NULL};
    const char *uri_string;
    int max_workers = 100;
    const char *wakeup = "eventfd";
    int connect = 1;
    PyObject *apm_sink = Py_None, *sdam_sink = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|ispOO", kwlist, &uri_string, &max_workers,
                                     &wakeup, &connect, &apm_sink, &sdam_sink))
        return NULL;
    if ((apm_sink != Py_None && !PyCallable_Check(apm_sink)) ||
        (sdam_sink != Py_None && !PyCallable_Check(sdam_sink))) {
        PyErr_SetString(PyExc_TypeError, "apm_sink and sdam_sink must be callable or None");
        return NULL;
    }
    AmongoState *st = amongo_state_from_type(type);
    int wake_mode;
    if (!strcmp(wakeup, "eventfd"))
        wake_mode = AMONGO_WAKE_EVENTFD;
    else if (!strcmp(wakeup, "threadsafe"))
        wake_mode = AMONGO_WAKE_THREADSAFE;
    else {
        PyErr_Format(st->exc_ConfigurationError,
                     "wakeup must be 'eventfd' or 'threadsafe', not '%s'", wakeup);
        return NULL;
    }
    if (max_workers < 1) {
        PyErr_SetString(st->exc_ConfigurationError, "max_workers must be at least 1");
        return NULL;
    }

    int32_t socket_timeout_ms;
    AmongoSdam *sdam = amongo_sdam_new(sdam_sink != Py_None);
    if (!sdam)
        return PyErr_NoMemory();
    mongoc_client_pool_t *mpool = client_open_pool(st, uri_string, max_workers, apm_sink != Py_None,
                                                   sdam, &socket_timeout_ms);
    if (!mpool) {
        amongo_sdam_decref(sdam);
        return NULL;
    }
    AmongoPool *pool = amongo_pool_new(mpool, max_workers);
    PyObject *queues = PyDict_New();
    AmongoClient *self = pool && queues ? (AmongoClient *)type->tp_alloc(type, 0) : NULL;
    if (!self) {
        if (pool)
            amongo_pool_free(pool);
        Py_XDECREF(queues);
        mongoc_client_pool_destroy(mpool);
        amongo_sdam_decref(sdam);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    self->mpool = mpool;
    self->pool = pool;
    self->queues = queues;
    self->sdam = sdam;
    self->sdam_sink = sdam_sink != Py_None ? Py_NewRef(sdam_sink) : NULL;
    self->apm_sink = apm_sink != Py_None ? Py_NewRef(apm_sink) : NULL;
    self->wake_mode = wake_mode;
    self->state = CLIENT_OPEN;
    self->max_workers = max_workers;
    self->socket_timeout_ms = socket_timeout_ms;
    self->fork_generation = atomic_load(&amongo_fork_generation);
    if (client_start(self, st, connect) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Fail the jobs that never ran: each goes to its own loop's queue, to be resolved there. */
static void
client_fail_queued(AmongoJob *job)
{
    while (job) {
        AmongoJob *next = job->next;
        /* Each one, then the jobs of its session that waited for it (they never will run). */
        for (AmongoJob *j = job; j;) {
            AmongoJob *after = j->session ? amongo_session_turn_done(j->session) : NULL;
            amongo_job_set_closed(j);
            amongo_queue_push(j->queue, j);
            j = after;
        }
        job = next;
    }
}

/* The arguments of submit(), checked. Borrowed references. */
typedef struct {
    long op, result_kind;
    unsigned long flags, server_id;
    int64_t deadline_us;
    PyObject *db, *coll, *cmd, *opts, *codec, *session, *read_prefs;
    AmongoSession *cursor_session;
    const char *db_utf8, *coll_utf8;
} SubmitArgs;

static const uint8_t *
bytes_or_null(PyObject *obj, size_t *len)
{
    if (obj == Py_None) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)PyBytes_GET_SIZE(obj);
    return (const uint8_t *)PyBytes_AS_STRING(obj);
}

/* 0, or -1 with TypeError/ValueError: the protocol's types (asyncmongo/_core.pyi). */
static int
submit_parse(PyObject *const *args, Py_ssize_t nargs, SubmitArgs *a)
{
    if (nargs < 7 || nargs > 12) {
        PyErr_SetString(PyExc_TypeError, "submit() takes 7 to 12 arguments");
        return -1;
    }
    a->db = args[2], a->coll = args[3], a->cmd = args[4], a->opts = args[5], a->codec = args[6];
    a->session = nargs > 9 && args[9] != Py_None ? args[9] : NULL;
    a->read_prefs = nargs > 10 ? args[10] : Py_None;
    a->op = PyLong_AsLong(args[0]);
    a->result_kind = PyLong_AsLong(args[1]);
    a->flags = nargs > 7 ? PyLong_AsUnsignedLong(args[7]) : 0;
    a->server_id = nargs > 8 ? PyLong_AsUnsignedLong(args[8]) : 0;
    /* The deadline: time.monotonic() seconds, the clock libmongoc's monotonic time reads. */
    double deadline = nargs > 11 && args[11] != Py_None ? PyFloat_AsDouble(args[11]) : 0.0;
    if (PyErr_Occurred())
        return -1;
    a->deadline_us = isfinite(deadline) && deadline > 0 ? (int64_t)(deadline * 1e6) : 0;
    if (a->op < 0 || a->op >= AMONGO_OP_COUNT || a->op == AMONGO_OP_BARRIER || a->result_kind < 0 ||
        a->result_kind >= AMONGO_RES_COUNT) {
        PyErr_SetString(PyExc_ValueError, "invalid operation or result kind");
        return -1;
    }
    if (!PyUnicode_Check(a->db) || (a->coll != Py_None && !PyUnicode_Check(a->coll)) ||
        (a->opts != Py_None && !PyBytes_Check(a->opts)) ||
        (a->read_prefs != Py_None && !PyBytes_Check(a->read_prefs))) {
        PyErr_SetString(PyExc_TypeError, "submit(): db: str, coll: str|None, "
                                         "opts: bytes|None, read_preference: bytes|None");
        return -1;
    }
    if ((a->op == AMONGO_OP_INSERT || a->op == AMONGO_OP_BULK) && a->coll == Py_None) {
        PyErr_SetString(PyExc_TypeError, "submit(): inserts need a collection name");
        return -1;
    }
    a->cursor_session = a->session ? amongo_session_from_capsule(a->session) : NULL;
    if (a->session && !a->cursor_session)
        return -1;
    a->db_utf8 = PyUnicode_AsUTF8(a->db);
    a->coll_utf8 = a->coll != Py_None ? PyUnicode_AsUTF8(a->coll) : NULL;
    return !a->db_utf8 || (a->coll != Py_None && !a->coll_utf8) ? -1 : 0;
}

/* ---- encoding at submit: Python objects straight into the job's buffer (codec.h) --------- */

static int
raise_too_large(AmongoState *st, size_t size)
{
    PyErr_Format(st->exc_DocumentTooLarge,
                 "BSON document too large (%zu bytes) - the connected server supports BSON document "
                 "sizes up to %d bytes.",
                 size, AMONGO_MAX_BSON_SIZE);
    return -1;
}

/* One document to insert, as PyMongo's insert_one/insert_many check and complete it: a mapping
 * (TypeError otherwise), given an ObjectId _id when it has none (in the caller's own document, as
 * PyMongo does; a RawBSONDocument is sent as it is), encoded _id first, at most the server's size. */
static int
encode_insert_document(AmongoState *st, PyObject *doc, PyObject *codec, AmongoBuffer *out)
{
    int raw = 0;
    if (!PyDict_Check(doc)) {
        PyObject *marker = PyObject_GetAttr(doc, st->codec_s_type_marker);
        if (marker) {
            raw = PyLong_Check(marker) && PyLong_AsLong(marker) == 101;
            Py_DECREF(marker);
        } else {
            PyErr_Clear();
        }
        int mutable_mapping = raw ? 1 : PyObject_IsInstance(doc, st->abc_MutableMapping);
        if (mutable_mapping < 0)
            return -1;
        if (!mutable_mapping) {
            PyErr_SetString(PyExc_TypeError,
                            "document must be an instance of dict, bson.son.SON, "
                            "bson.raw_bson.RawBSONDocument, or a type that inherits from "
                            "collections.MutableMapping");
            return -1;
        }
    }
    if (!raw) {
        int has = PyDict_Check(doc) ? PyDict_Contains(doc, st->codec_s_id)
                                    : PySequence_Contains(doc, st->codec_s_id);
        if (has < 0)
            return -1;
        if (!has) {
            PyObject *oid = PyObject_CallNoArgs(st->codec_ObjectId);
            int rc = oid ? PyObject_SetItem(doc, st->codec_s_id, oid) : -1;
            Py_XDECREF(oid);
            if (rc < 0)
                return -1;
        }
    }
    size_t before = out->len;
    if (amongo_encode_document(st, doc, codec, AMONGO_ENCODE_ID_FIRST, out) < 0)
        return -1;
    if (out->len - before > AMONGO_MAX_BSON_SIZE) {
        size_t size = out->len - before;
        out->len = before;
        return raise_too_large(st, size);
    }
    return 0;
}

/* job->cmd from submit's `cmd`: bytes as they are (borrowed), or encoded here into the job's own
 * buffer: a sequence of documents for OP_INSERT (end to end), else one command or operation
 * document, refused when larger than the server takes (PyMongo's allowance for commands). */
static int
job_set_cmd(AmongoState *st, AmongoJob *job, PyObject *cmd, PyObject *codec)
{
    if (PyBytes_Check(cmd)) {
        job->cmd = (const uint8_t *)PyBytes_AS_STRING(cmd);
        job->cmd_len = (size_t)PyBytes_GET_SIZE(cmd);
        return 0;
    }
    PyObject *options = codec != Py_None ? codec : NULL;
    if (job->op == AMONGO_OP_INSERT && (PyList_Check(cmd) || PyTuple_Check(cmd))) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(cmd);
        PyObject **items = PySequence_Fast_ITEMS(cmd);
        for (Py_ssize_t i = 0; i < n; i++)
            if (encode_insert_document(st, items[i], options, &job->encoded) < 0)
                return -1;
    } else {
        if (amongo_encode_document(st, cmd, options, AMONGO_ENCODE_ID_FIRST, &job->encoded) < 0)
            return -1;
        if (job->encoded.len > AMONGO_MAX_BSON_SIZE + AMONGO_COMMAND_OVERHEAD)
            return raise_too_large(st, job->encoded.len);
    }
    job->cmd = job->encoded.data;
    job->cmd_len = job->encoded.len;
    return 0;
}

/* A job for `a`, resolving `future` on queue `q`: inputs borrowed from the argument objects, which
 * it keeps alive, and a reference to every object it needs on the loop thread. */
static AmongoJob *
client_job_new(AmongoClient *self, const SubmitArgs *a, AmongoQueue *q, PyObject *future)
{
    AmongoJob *job = amongo_job_new();
    if (!job)
        return NULL;
    job->op = (int)a->op;
    job->result_kind = (int)a->result_kind;
    job->flags = (unsigned)a->flags;
    job->server_id = (uint32_t)a->server_id;
    job->deadline_us = a->deadline_us;
    job->socket_timeout_ms = self->socket_timeout_ms;
    job->mpool = self->mpool;
    job->pool = self->pool;
    if (a->session) {
        job->session_obj = Py_NewRef(a->session);
        job->session = a->cursor_session;
    }
    job->db = a->db_utf8;
    job->coll = a->coll_utf8;
    if (job_set_cmd(client_state(self), job, a->cmd, a->codec) < 0) {
        amongo_job_free(job);
        return NULL;
    }
    job->opts = bytes_or_null(a->opts, &job->opts_len);
    job->read_prefs = bytes_or_null(a->read_prefs, &job->read_prefs_len);
    job->future = Py_NewRef(future);
    job->db_obj = Py_NewRef(a->db);
    job->coll_obj = Py_NewRef(a->coll);
    job->cmd_obj = Py_NewRef(a->cmd);
    job->opts_obj = Py_NewRef(a->opts);
    job->read_prefs_obj = Py_NewRef(a->read_prefs);
    job->codec_options = a->codec != Py_None ? Py_NewRef(a->codec) : NULL;
    job->owner = Py_NewRef(self);
    job->stats = &self->stats;
    if (self->apm_sink) {
        job->apm_sink = Py_NewRef(self->apm_sink);
        job->flags |= AMONGO_FLAG_APM;
    }
    amongo_queue_retain(q);
    job->queue = q;
    return job;
}

/* submit(op, result_kind, db, coll, cmd, opts, codec_options, flags=0, server_id=0, session=None,
 *        read_preference=None, deadline=None) -> Future. Positional only: it is the hot path. */
static PyObject *
client_submit(AmongoClient *self, PyObject *const *args, Py_ssize_t nargs)
{
    AmongoState *st = client_state(self);
    SubmitArgs a;
    if (submit_parse(args, nargs, &a) < 0 || client_check_usable(self) < 0)
        return NULL;
    AmongoQueue *q = amongo_queue_get(st, self->queues, self->wake_mode);
    PyObject *future = q && client_arm_sdam(self, q) == 0 ? amongo_queue_create_future(q) : NULL;
    if (!future)
        return NULL;
    AmongoJob *job = client_job_new(self, &a, q, future);
    if (!job) {
        Py_DECREF(future);
        return NULL;
    }
    /* A session's job waits its turn behind the session's job that is queued or running. */
    int rc = job->session && amongo_session_enqueue(job->session, job)
                 ? 0
                 : amongo_pool_submit(self->pool, job);
    if (rc < 0) {
        if (job->session)
            client_fail_queued(amongo_session_turn_done(job->session));
        amongo_job_free(job);
        Py_DECREF(future);
        if (rc == -1)
            PyErr_SetString(st->exc_InvalidOperation, "Cannot use AsyncMongoClient after close");
        else
            PyErr_SetString(PyExc_RuntimeError, "asyncmongo: could not start a worker thread");
        return NULL;
    }
    atomic_fetch_add_explicit(&amongo_counters.jobs_submitted, 1, memory_order_relaxed);
    self->stats.submitted++;
    amongo_log_maybe_flush(st);
    return future;
}

/* cancel(future, session=None) -> bool: take the job out of the run queue (or out of its session's
 * queue: pass the session's capsule) if no worker has taken it yet, so that it is never sent. A
 * running job cannot be interrupted: it finishes and its result is dropped. */
static PyObject *
client_cancel(AmongoClient *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "cancel() takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *future = args[0];
    AmongoSession *s = NULL;
    if (nargs > 1 && args[1] != Py_None && !(s = amongo_session_from_capsule(args[1])))
        return NULL;
    if (!self->pool || client_forked(self))
        Py_RETURN_FALSE;
    AmongoJob *job = amongo_pool_take_queued(self->pool, future);
    if (job && job->session) {
        /* It had its session's turn: the next job of the session has it now. */
        AmongoJob *next = amongo_session_turn_done(job->session);
        if (next && amongo_pool_submit(self->pool, next) < 0)
            client_fail_queued(next);
    } else if (!job && s) {
        job = amongo_session_take_waiting(s, future);
    }
    if (!job)
        Py_RETURN_FALSE;
    self->stats.cancelled++;
    atomic_fetch_add_explicit(&amongo_counters.jobs_cancelled, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&amongo_counters.jobs_completed, 1, memory_order_relaxed);
    amongo_job_free(job);
    Py_RETURN_TRUE;
}

typedef struct {
    AmongoPool *pool;
    mongoc_client_pool_t *mpool;
    AmongoSdam *sdam; /* its callbacks may run until the pool is destroyed */
} PoolRemains;

/* Pure C: wait for the last worker, then let libmongoc end the server sessions and close the
 * connections. That can take up to serverSelectionTimeoutMS when the server is gone, so it runs on
 * a thread of its own and no caller waits for it. */
static void *
destroy_pool_nogil(void *arg)
{
    PoolRemains *r = arg;
    amongo_pool_wait_stopped_nogil(r->pool);
    amongo_pool_release_contexts_nogil(r->pool);
    mongoc_client_pool_destroy(r->mpool);
    amongo_pool_free(r->pool);
    amongo_sdam_decref(r->sdam);
    free(r);
    return NULL;
}

static void
client_destroy_pool(AmongoClient *self)
{
    PoolRemains *r = malloc(sizeof *r);
    if (!self->pool || !r) {
        free(r);
        return; /* out of memory: leak the pool rather than block the loop */
    }
    r->pool = self->pool;
    r->mpool = self->mpool;
    r->sdam = self->sdam;
    amongo_sdam_incref(r->sdam);
    amongo_sdam_close(self->sdam); /* no delivery after close */
    self->pool = NULL;
    self->mpool = NULL;
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&tid, &attr, destroy_pool_nogil, r);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        Py_BEGIN_ALLOW_THREADS
        destroy_pool_nogil(r);
        Py_END_ALLOW_THREADS
    }
}

/* close(wait=True) -> Future | None: stop taking jobs and fail the queued ones. The future resolves
 * once every worker has finished its running job and exited; then call destroy(). Without a
 * running loop, or with wait false (Motor's synchronous close), close at once and return None: a
 * detached thread releases the pool once the workers are gone. */
static PyObject *
client_close(AmongoClient *self, PyObject *const *args, Py_ssize_t nargs)
{
    AmongoState *st = client_state(self);
    int wait = nargs > 0 ? PyObject_IsTrue(args[0]) : 1;
    if (wait < 0)
        return NULL;
    if (self->state != CLIENT_OPEN || !self->pool)
        Py_RETURN_NONE;
    if (client_forked(self)) {
        /* The parent's threads do not exist here; its pool must not be touched. Leak it. */
        self->state = CLIENT_CLOSED;
        self->pool = NULL;
        self->mpool = NULL;
        Py_RETURN_NONE;
    }
    self->state = CLIENT_CLOSING;
    AmongoQueue *q = wait ? amongo_queue_get(st, self->queues, self->wake_mode) : NULL;
    AmongoJob *barrier = NULL;
    PyObject *future = NULL;
    if (q) {
        future = amongo_queue_create_future(q);
        barrier = future ? amongo_job_new() : NULL;
        if (!barrier) {
            Py_CLEAR(future);
            return NULL;
        }
        barrier->op = AMONGO_OP_BARRIER;
        barrier->result_kind = AMONGO_RES_NONE;
        barrier->ok = true;
        barrier->future = Py_NewRef(future);
        barrier->owner = Py_NewRef(self);
        amongo_queue_retain(q);
        barrier->queue = q;
        atomic_fetch_add_explicit(&amongo_counters.jobs_submitted, 1, memory_order_relaxed);
    } else {
        PyErr_Clear(); /* no running loop: close synchronously */
    }
    bool barrier_queued = false;
    AmongoJob *queued = amongo_pool_stop(self->pool, barrier, &barrier_queued);
    client_fail_queued(queued);
    if (barrier && !barrier_queued) {
        amongo_job_complete(st, barrier);
        amongo_job_free(barrier);
    }
    if (!future) {
        client_destroy_pool(self);
        self->state = CLIENT_CLOSED;
        if (amongo_queues_sweep(self->queues, true) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    return future;
}

/* destroy(): after close()'s future resolved: release libmongoc's pool and the loops' queues. */
static PyObject *
client_destroy(AmongoClient *self, PyObject *Py_UNUSED(ignored))
{
    if (self->state == CLIENT_OPEN) {
        PyErr_SetString(PyExc_RuntimeError, "destroy() before close()");
        return NULL;
    }
    if (!client_forked(self))
        client_destroy_pool(self);
    self->state = CLIENT_CLOSED;
    if (amongo_queues_sweep(self->queues, true) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* abandon(): at interpreter exit. Stop taking jobs and let idle workers go, without waiting for
 * operations in flight (they finish on their own and their completions are dropped). */
static PyObject *
client_abandon(AmongoClient *self, PyObject *Py_UNUSED(ignored))
{
    if (self->pool && !client_forked(self) && self->state == CLIENT_OPEN) {
        bool unused;
        AmongoJob *queued = amongo_pool_stop(self->pool, NULL, &unused);
        client_fail_queued(queued);
        self->state = CLIENT_CLOSING;
    }
    Py_RETURN_NONE;
}

/* stats() -> dict: what the client is doing, from counters it keeps anyway: cheap enough to call
 * every second (a few locks held for a few instructions each). */
static PyObject *
client_stats(AmongoClient *self, PyObject *Py_UNUSED(ignored))
{
    int workers = 0, queued = 0, sessions = 0, busy = 0;
    long running = 0;
    if (self->pool && !client_forked(self)) {
        workers = amongo_pool_workers(self->pool);
        queued = amongo_pool_queued(self->pool);
        sessions = amongo_pool_sessions(self->pool);
        amongo_pool_activity(self->pool, &busy, &running);
    }
    PyObject *loops = self->queues ? amongo_queues_stats(self->queues) : PyList_New(0);
    if (!loops)
        return NULL;
    long long wakeups = 0, drains = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(loops); i++) {
        PyObject *d = PyList_GET_ITEM(loops, i);
        wakeups += PyLong_AsLongLong(PyDict_GetItemString(d, "wakeups"));
        drains += PyLong_AsLongLong(PyDict_GetItemString(d, "drains"));
    }
    const AmongoStats *c = &self->stats;
    return Py_BuildValue("{s:L,s:i,s:l,s:L,s:L,s:L,s:i,s:i,s:i,s:i,s:N,s:L,s:L}",
                         "submitted", (long long)c->submitted, "queued", queued, "running", running,
                         "completed", (long long)c->completed, "failed", (long long)c->failed,
                         "cancelled", (long long)c->cancelled, "workers", workers, "workers_busy",
                         busy, "max_workers", self->max_workers, "sessions", sessions, "loops",
                         loops, "wakeups", wakeups, "drains", drains);
}

static PyObject *
client_queue(AmongoClient *self, PyObject *Py_UNUSED(ignored))
{
    if (client_check_usable(self) < 0)
        return NULL;
    AmongoQueue *q = amongo_queue_get(client_state(self), self->queues, self->wake_mode);
    return q ? Py_NewRef((PyObject *)q) : NULL;
}

/* topology(start=False) -> TopologyFacts | None: libmongoc's latest description of the deployment
 * (from its SDAM callbacks), None before the first. With start, begin discovery now if no
 * operation began it yet (PyMongo opens its topology for these questions too): a pooled client
 * popped once starts libmongoc's monitor threads; that pop does no I/O and never blocks. */
static PyObject *
client_topology(AmongoClient *self, PyObject *const *args, Py_ssize_t nargs)
{
    int start = nargs > 0 ? PyObject_IsTrue(args[0]) : 0;
    if (start < 0)
        return NULL;
    if (start && !self->monitoring && self->mpool && !client_forked(self) &&
        self->state == CLIENT_OPEN) {
        mongoc_client_t *c = mongoc_client_pool_try_pop(self->mpool);
        if (c) {
            mongoc_client_pool_push(self->mpool, c);
            self->monitoring = true;
        }
    }
    return amongo_sdam_topology(client_state(self), self->sdam);
}

/* wait_writable(timeout_ms) -> bool: block this thread (GIL released) until libmongoc knows a
 * writable server, for at most timeout_ms: Motor's blocking topology properties. */
static PyObject *
client_wait_writable(AmongoClient *self, PyObject *arg)
{
    long long timeout_ms = PyLong_AsLongLong(arg);
    if (timeout_ms == -1 && PyErr_Occurred())
        return NULL;
    PyObject *none = client_topology(self, (PyObject *[]){Py_True}, 1); /* start discovery */
    if (!none)
        return NULL;
    Py_DECREF(none);
    AmongoSdam *s = self->sdam;
    amongo_sdam_incref(s);
    bool writable;
    Py_BEGIN_ALLOW_THREADS
    writable = amongo_sdam_wait_writable_nogil(s, timeout_ms);
    Py_END_ALLOW_THREADS
    amongo_sdam_decref(s);
    return PyBool_FromLong(writable);
}

static PyObject *
client_get_closed(AmongoClient *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->state != CLIENT_OPEN);
}

static int
client_traverse(AmongoClient *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->queues);
    Py_VISIT(self->apm_sink);
    Py_VISIT(self->sdam_sink);
    return self->sdam ? amongo_sdam_traverse(self->sdam, visit, arg) : 0;
}

static int
client_clear(AmongoClient *self)
{
    if (self->sdam)
        amongo_sdam_close(self->sdam); /* the armed carrier's references go */
    Py_CLEAR(self->queues);
    Py_CLEAR(self->apm_sink);
    Py_CLEAR(self->sdam_sink);
    return 0;
}

/* C only: stop taking jobs, fail the queued ones, and let a detached thread destroy libmongoc's
 * pool once the last worker and session are gone. Safe to call more than once. */
static void
client_release_pool(AmongoClient *self)
{
    if (!self->pool)
        return;
    if (client_forked(self)) {
        /* The parent's threads do not exist here; its pool must not be touched. Leak it. */
        self->pool = NULL;
        self->mpool = NULL;
        return;
    }
    bool unused;
    AmongoJob *queued = amongo_pool_stop(self->pool, NULL, &unused);
    client_fail_queued(queued);
    client_destroy_pool(self);
}

/* PEP 442 finalizer: called once, on a live object, before the collector clears anything of a
 * cycle the client is in, so the loops its queues name are still whole. It does the Python-level
 * part of the teardown (taking the queues' readers off their loops); at interpreter exit it does
 * none, since loops and modules may be half torn down by then. It never raises and never hands
 * the client to Python (an unraisable hook may keep what it is given). */
static void
client_finalize(AmongoClient *self)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    client_release_pool(self);
    if (self->queues)
        amongo_queues_forget(self->queues);
    self->state = CLIENT_CLOSED;
    PyErr_Restore(type, value, tb);
}

/* No job refers to the client here (each holds a reference), so the workers are idle or gone.
 * The finalizer did the Python-level work; what is left is C. */
static void
client_dealloc(AmongoClient *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return; /* resurrected by the finalizer */
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    client_release_pool(self); /* a client resurrected and used again after its finalizer */
    client_clear(self);
    if (self->sdam)
        amongo_sdam_decref(self->sdam);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef client_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))client_submit, METH_FASTCALL,
     "submit(op, result_kind, db, coll, cmd, opts, codec_options, flags=0, server_id=0, session=None, "
     "read_preference=None, deadline=None)"},
    {"cancel", (PyCFunction)(void (*)(void))client_cancel, METH_FASTCALL,
     "cancel(future, session=None) -> bool: unqueue a job not yet run"},
    {"close", (PyCFunction)(void (*)(void))client_close, METH_FASTCALL,
     "close(wait=True) -> Future | None"},
    {"destroy", (PyCFunction)client_destroy, METH_NOARGS, "destroy(): release the pool after close"},
    {"abandon", (PyCFunction)client_abandon, METH_NOARGS, "abandon(): stop at interpreter exit"},
    {"stats", (PyCFunction)client_stats, METH_NOARGS, "stats() -> dict"},
    {"queue", (PyCFunction)client_queue, METH_NOARGS, "the running loop's completion queue"},
    {"topology", (PyCFunction)(void (*)(void))client_topology, METH_FASTCALL,
     "topology(start=False) -> TopologyFacts | None: libmongoc's latest description"},
    {"wait_writable", (PyCFunction)client_wait_writable, METH_O,
     "wait_writable(timeout_ms) -> bool: block (GIL released) until a writable server is known"},
    {NULL},
};

static PyGetSetDef client_getset[] = {
    {"closed", (getter)client_get_closed, NULL, "True once close() was called", NULL},
    {NULL},
};

static PyMemberDef client_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(AmongoClient, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot client_slots[] = {
    {Py_tp_new, client_new},
    {Py_tp_dealloc, client_dealloc},
    {Py_tp_finalize, client_finalize},
    {Py_tp_traverse, client_traverse},
    {Py_tp_clear, client_clear},
    {Py_tp_methods, client_methods},
    {Py_tp_getset, client_getset},
    {Py_tp_members, client_members},
    {Py_tp_doc, "Client(uri, max_workers=100, wakeup='eventfd', connect=True): the native core."},
    {0, NULL},
};

static PyType_Spec client_spec = {
    .name = "asyncmongo._core.Client",
    .basicsize = sizeof(AmongoClient),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = client_slots,
};

int
amongo_client_init_type(PyObject *module, AmongoState *st)
{
    st->ClientType = PyType_FromModuleAndSpec(module, &client_spec, NULL);
    if (!st->ClientType)
        return -1;
    return PyModule_AddType(module, (PyTypeObject *)st->ClientType);
}
