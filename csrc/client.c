/* client.c: the native client type over mongoc_client_pool_t: submit, cancel, close.
 * Submit runs on the loop thread: it takes the running loop's completion queue, makes the future,
 * builds a plain C job that borrows the encoded bytes (keeping their objects alive) and queues it
 * for the workers. Nothing here blocks the loop: waiting for workers happens with the GIL released,
 * and only when they are known to be finishing. */
#include "asyncmongo.h"

#include <structmember.h>

enum { CLIENT_OPEN = 0, CLIENT_CLOSING = 1, CLIENT_CLOSED = 2 };

typedef struct {
    PyObject_HEAD
    mongoc_client_pool_t *mpool;
    AmongoPool *pool;
    PyObject *queues;    /* dict: event loop -> completion queue */
    PyObject *apm_sink;  /* callable(events) for command monitoring, or NULL */
    int wake_mode;
    int state;
    int max_workers;
    int32_t socket_timeout_ms;
    long fork_generation;
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

/* libmongoc's pool for `uri_string`, or NULL with InvalidURI/ConfigurationError. Opened into
 * locals and assigned to the object only on success (CPython's _sqlite habit). */
static mongoc_client_pool_t *
client_open_pool(AmongoState *st, const char *uri_string, int max_workers, bool apm,
                 int32_t *socket_timeout_ms)
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
    amongo_apm_install(mpool, apm); /* before the first client leaves the pool */
    /* One client per worker, plus slack for a worker that is exiting while its successor starts,
     * and room for cursors and explicit sessions, which keep a client each (sessions.c). A client
     * opens its connection only when used, so the room costs nothing until it is taken. */
    uint32_t room = max_workers > 64 ? (uint32_t)max_workers : 64;
    mongoc_client_pool_max_size(mpool, (uint32_t)max_workers + room + 1);
    return mpool;
}

static PyObject *
client_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"uri", "max_workers", "wakeup", "connect", "apm_sink", NULL};
    const char *uri_string;
    int max_workers = 100;
    const char *wakeup = "eventfd";
    int connect = 1;
    PyObject *apm_sink = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|ispO", kwlist, &uri_string, &max_workers, &wakeup,
                                     &connect, &apm_sink))
        return NULL;
    if (apm_sink != Py_None && !PyCallable_Check(apm_sink)) {
        PyErr_SetString(PyExc_TypeError, "apm_sink must be callable or None");
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
    mongoc_client_pool_t *mpool =
        client_open_pool(st, uri_string, max_workers, apm_sink != Py_None, &socket_timeout_ms);
    if (!mpool)
        return NULL;
    AmongoPool *pool = amongo_pool_new(mpool, max_workers);
    PyObject *queues = PyDict_New();
    AmongoClient *self = pool && queues ? (AmongoClient *)type->tp_alloc(type, 0) : NULL;
    if (!self) {
        if (pool)
            amongo_pool_free(pool);
        Py_XDECREF(queues);
        mongoc_client_pool_destroy(mpool);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    self->mpool = mpool;
    self->pool = pool;
    self->queues = queues;
    self->apm_sink = apm_sink != Py_None ? Py_NewRef(apm_sink) : NULL;
    self->wake_mode = wake_mode;
    self->state = CLIENT_OPEN;
    self->max_workers = max_workers;
    self->socket_timeout_ms = socket_timeout_ms;
    self->fork_generation = atomic_load(&amongo_fork_generation);
    if (connect) {
        /* The first pop starts libmongoc's topology monitor: discovery begins now, in the
         * background, as PyMongo's connect=True does. It does no I/O on this thread. */
        mongoc_client_t *c = mongoc_client_pool_pop(mpool);
        mongoc_client_pool_push(mpool, c);
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
    if (nargs < 7 || nargs > 11) {
        PyErr_SetString(PyExc_TypeError, "submit() takes 7 to 11 arguments");
        return -1;
    }
    a->db = args[2], a->coll = args[3], a->cmd = args[4], a->opts = args[5], a->codec = args[6];
    a->session = nargs > 9 && args[9] != Py_None ? args[9] : NULL;
    a->read_prefs = nargs > 10 ? args[10] : Py_None;
    a->op = PyLong_AsLong(args[0]);
    a->result_kind = PyLong_AsLong(args[1]);
    a->flags = nargs > 7 ? PyLong_AsUnsignedLong(args[7]) : 0;
    a->server_id = nargs > 8 ? PyLong_AsUnsignedLong(args[8]) : 0;
    if (PyErr_Occurred())
        return -1;
    if (a->op < 0 || a->op >= AMONGO_OP_COUNT || a->op == AMONGO_OP_BARRIER || a->result_kind < 0 ||
        a->result_kind >= AMONGO_RES_COUNT) {
        PyErr_SetString(PyExc_ValueError, "invalid operation or result kind");
        return -1;
    }
    if (!PyUnicode_Check(a->db) || (a->coll != Py_None && !PyUnicode_Check(a->coll)) ||
        !PyBytes_Check(a->cmd) || (a->opts != Py_None && !PyBytes_Check(a->opts)) ||
        (a->read_prefs != Py_None && !PyBytes_Check(a->read_prefs))) {
        PyErr_SetString(PyExc_TypeError, "submit(): db: str, coll: str|None, cmd: bytes, "
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
    job->socket_timeout_ms = self->socket_timeout_ms;
    job->mpool = self->mpool;
    job->pool = self->pool;
    if (a->session) {
        job->session_obj = Py_NewRef(a->session);
        job->session = a->cursor_session;
    }
    job->db = a->db_utf8;
    job->coll = a->coll_utf8;
    job->cmd = bytes_or_null(a->cmd, &job->cmd_len);
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
    if (self->apm_sink) {
        job->apm_sink = Py_NewRef(self->apm_sink);
        job->flags |= AMONGO_FLAG_APM;
    }
    amongo_queue_retain(q);
    job->queue = q;
    return job;
}

/* submit(op, result_kind, db, coll, cmd, opts, codec_options, flags=0, server_id=0, session=None,
 *        read_preference=None) -> Future. Positional only: it is the hot path. */
static PyObject *
client_submit(AmongoClient *self, PyObject *const *args, Py_ssize_t nargs)
{
    AmongoState *st = client_state(self);
    SubmitArgs a;
    if (submit_parse(args, nargs, &a) < 0 || client_check_usable(self) < 0)
        return NULL;
    AmongoQueue *q = amongo_queue_get(st, self->queues, self->wake_mode);
    PyObject *future = q ? amongo_queue_create_future(q) : NULL;
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
    atomic_fetch_add_explicit(&amongo_counters.jobs_cancelled, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&amongo_counters.jobs_completed, 1, memory_order_relaxed);
    amongo_job_free(job);
    Py_RETURN_TRUE;
}

typedef struct {
    AmongoPool *pool;
    mongoc_client_pool_t *mpool;
} PoolRemains;

/* Pure C: wait for the last worker, then let libmongoc end the server sessions and close the
 * connections. That can take up to serverSelectionTimeoutMS when the server is gone, so it runs on
 * a thread of its own and no caller waits for it. */
static void *
destroy_pool_nogil(void *arg)
{
    PoolRemains *r = arg;
    amongo_pool_wait_stopped_nogil(r->pool);
    mongoc_client_pool_destroy(r->mpool);
    amongo_pool_free(r->pool);
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

/* close() -> Future | None: stop taking jobs and fail the queued ones. The future resolves once
 * every worker has finished its running job and exited; then call destroy(). Without a running
 * loop, close synchronously and return None. */
static PyObject *
client_close(AmongoClient *self, PyObject *Py_UNUSED(ignored))
{
    AmongoState *st = client_state(self);
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
    AmongoQueue *q = amongo_queue_get(st, self->queues, self->wake_mode);
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

static PyObject *
client_stats(AmongoClient *self, PyObject *Py_UNUSED(ignored))
{
    int workers = self->pool && !client_forked(self) ? amongo_pool_workers(self->pool) : 0;
    int queued = self->pool && !client_forked(self) ? amongo_pool_queued(self->pool) : 0;
    int sessions = self->pool && !client_forked(self) ? amongo_pool_sessions(self->pool) : 0;
    return Py_BuildValue("{s:i,s:i,s:n,s:i,s:i}", "workers", workers, "queued", queued, "loops",
                         PyDict_GET_SIZE(self->queues), "max_workers", self->max_workers,
                         "cursor_sessions", sessions);
}

static PyObject *
client_queue(AmongoClient *self, PyObject *Py_UNUSED(ignored))
{
    if (client_check_usable(self) < 0)
        return NULL;
    AmongoQueue *q = amongo_queue_get(client_state(self), self->queues, self->wake_mode);
    return q ? Py_NewRef((PyObject *)q) : NULL;
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
    return 0;
}

static int
client_clear(AmongoClient *self)
{
    Py_CLEAR(self->queues);
    Py_CLEAR(self->apm_sink);
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
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef client_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))client_submit, METH_FASTCALL,
     "submit(op, result_kind, db, coll, cmd, opts, codec_options, flags=0, server_id=0, session=None, "
     "read_preference=None)"},
    {"cancel", (PyCFunction)(void (*)(void))client_cancel, METH_FASTCALL,
     "cancel(future, session=None) -> bool: unqueue a job not yet run"},
    {"close", (PyCFunction)client_close, METH_NOARGS, "close() -> Future | None"},
    {"destroy", (PyCFunction)client_destroy, METH_NOARGS, "destroy(): release the pool after close"},
    {"abandon", (PyCFunction)client_abandon, METH_NOARGS, "abandon(): stop at interpreter exit"},
    {"stats", (PyCFunction)client_stats, METH_NOARGS, "stats() -> dict"},
    {"queue", (PyCFunction)client_queue, METH_NOARGS, "the running loop's completion queue"},
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
