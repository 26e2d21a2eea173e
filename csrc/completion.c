/* completion.c: one completion queue per event loop, its wake-up and its drain.
 * Workers append finished jobs and wake the loop at most once per batch: by writing an eventfd the
 * loop watches with add_reader (the default: the worker never waits for the GIL), or, where the loop
 * has no add_reader or the user asks for it, with loop.call_soon_threadsafe (which needs the GIL).
 * The drain runs on the loop thread, takes the whole batch at once and resolves every future. */
#include "asyncmongo.h"

#include <structmember.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>


struct AmongoQueue {
    PyObject_HEAD
    pthread_mutex_t mu;     /* protects done, wake_pending and the counts; never held while taking the GIL */
    AmongoJobList done;     /* completions not yet drained */
    bool wake_pending;      /* a wake-up is on its way: the next drain will see every queued job */
    int mode;
    int efd;                /* AMONGO_WAKE_EVENTFD only; open as long as the queue object lives */
    bool reader_added;
    bool detached;          /* its client forgot it while jobs were in flight */
    long jobs;              /* jobs holding a reference to this queue (loop thread only) */
    long wakeups;           /* wake-ups sent (under mu) */
    long drains;            /* drains run (loop thread) */
    long completions;       /* jobs handed over (under mu) */
    PyObject *loop;
    PyObject *create_future; /* bound loop.create_future, looked up once */
    PyObject *call_soon_threadsafe;
    PyObject *drain;         /* bound self.drain for call_soon_threadsafe, made on first need */
    PyObject *weakreflist;
};

static void queue_unwatch(AmongoQueue *q);
static void queue_unwatch_reader(AmongoQueue *q);
static void queue_discard_list(AmongoQueue *q, AmongoJob *job);
static int queue_loop_closed(AmongoQueue *q);

/* ---- worker side ------------------------------------------------------------------------- */

static void
queue_append_locked(AmongoQueue *q, AmongoJob *job)
{
    q->completions++;
    amongo_jobs_append(&q->done, job);
}

/* Eventfd mode, any thread, GIL not needed: append and wake the loop if no wake-up is pending.
 * The eventfd is written under the mutex: once it is released the drain may free the queue. A
 * failed write can only mean the counter is full, i.e. a wake-up is pending anyway. */
static void
queue_push_eventfd_nogil(AmongoQueue *q, AmongoJob *job)
{
    pthread_mutex_lock(&q->mu);
    queue_append_locked(q, job);
    if (!q->wake_pending) {
        q->wake_pending = true;
        uint64_t one = 1;
        ssize_t n = write(q->efd, &one, sizeof one);
        (void)n;
        q->wakeups++;
        atomic_fetch_add_explicit(&amongo_counters.wakeups, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&q->mu);
}

/* Park a job without waking anybody (the interpreter is exiting: nobody will drain it). */
static void
queue_park_nogil(AmongoQueue *q, AmongoJob *job)
{
    pthread_mutex_lock(&q->mu);
    queue_append_locked(q, job);
    pthread_mutex_unlock(&q->mu);
}

/* GIL held. Threadsafe mode: append, and schedule one drain with loop.call_soon_threadsafe if
 * none is pending. The GIL is held across both so that the queue cannot be drained (and freed)
 * between the append and the call. */
static void
queue_push_threadsafe_gil(AmongoQueue *q, AmongoJob *job)
{
    pthread_mutex_lock(&q->mu);
    queue_append_locked(q, job);
    bool wake = !q->wake_pending;
    q->wake_pending = true;
    q->wakeups += wake;
    pthread_mutex_unlock(&q->mu);
    if (!wake)
        return;
    atomic_fetch_add_explicit(&amongo_counters.wakeups, 1, memory_order_relaxed);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = q->drain && q->call_soon_threadsafe
                      ? PyObject_CallOneArg(q->call_soon_threadsafe, q->drain)
                      : NULL;
    if (!r) {
        /* The loop is closed: its jobs wait in the queue until a sweep or close discards them. */
        PyErr_Clear();
    }
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
}

/* Workers that are taking, or about to take, the GIL for a threadsafe wake-up. The interpreter
 * exit handshake (amongo_finalize_begin) waits for them to leave before the interpreter goes. */
static atomic_int gil_takers;

void
amongo_queue_push_from_worker(AmongoQueue *q, AmongoJob *job)
{
    if (q->mode == AMONGO_WAKE_EVENTFD) {
        queue_push_eventfd_nogil(q, job);
        return;
    }
    /* Announce first, then look at the flag; the exit handshake sets the flag, then looks at the
     * count (both sequentially consistent): either we see the flag, or it sees us and waits. */
    atomic_fetch_add(&gil_takers, 1);
    if (atomic_load(&amongo_finalizing)) {
        queue_park_nogil(q, job);
    } else {
        PyGILState_STATE g = PyGILState_Ensure();
        queue_push_threadsafe_gil(q, job);
        PyGILState_Release(g);
    }
    atomic_fetch_sub(&gil_takers, 1);
}

int
amongo_queue_mode(AmongoQueue *q)
{
    return q->mode;
}

void
amongo_queue_push(AmongoQueue *q, AmongoJob *job)
{
    if (q->mode == AMONGO_WAKE_EVENTFD)
        queue_push_eventfd_nogil(q, job);
    else if (amongo_exiting())
        queue_park_nogil(q, job);
    else
        queue_push_threadsafe_gil(q, job);
}

/* GIL held, at interpreter exit: from now on workers park their completions instead of taking
 * the GIL; wait (GIL released, bounded) for those already on their way to it. */
void
amongo_finalize_begin(void)
{
    atomic_store(&amongo_finalizing, 1);
    for (int i = 0; i < 2000 && atomic_load(&gil_takers) > 0; i++) {
        Py_BEGIN_ALLOW_THREADS
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
        Py_END_ALLOW_THREADS
    }
}

/* ---- loop side --------------------------------------------------------------------------- */

static PyObject *
queue_drain(AmongoQueue *q, PyObject *Py_UNUSED(ignored))
{
    AmongoState *st = amongo_state_from_type(Py_TYPE(q));
    if (q->mode == AMONGO_WAKE_EVENTFD) {
        uint64_t v;
        ssize_t n = read(q->efd, &v, sizeof v);
        (void)n;
    }
    pthread_mutex_lock(&q->mu);
    AmongoJob *job = amongo_jobs_take_all(&q->done);
    q->wake_pending = false;
    pthread_mutex_unlock(&q->mu);
    q->drains++;
    atomic_fetch_add_explicit(&amongo_counters.drains, 1, memory_order_relaxed);
    if (!st || !st->str_done) {
        /* The module was torn down (interpreter exit): nobody can use a result any more. */
        queue_discard_list(q, job);
        Py_RETURN_NONE;
    }

    /* Keep the queue alive while its last jobs drop their references to it. */
    Py_INCREF(q);
    while (job) {
        AmongoJob *next = job->next;
        amongo_job_complete(st, job);
        amongo_job_free(job);
        job = next;
    }
    amongo_log_maybe_flush(st);
    if (q->detached && q->jobs == 0)
        queue_unwatch(q);
    Py_DECREF(q);
    Py_RETURN_NONE;
}

/* Drop completions without resolving them (nobody can await them). */
static void
queue_discard_list(AmongoQueue *q, AmongoJob *job)
{
    Py_INCREF(q);
    while (job) {
        AmongoJob *next = job->next;
        amongo_job_discard(job);
        amongo_job_free(job);
        job = next;
    }
    Py_DECREF(q);
}

/* Drop every queued completion (the loop is closed). */
static void
queue_discard_all(AmongoQueue *q)
{
    pthread_mutex_lock(&q->mu);
    AmongoJob *job = amongo_jobs_take_all(&q->done);
    pthread_mutex_unlock(&q->mu);
    queue_discard_list(q, job);
}

PyObject *
amongo_queue_create_future(AmongoQueue *q)
{
    return PyObject_CallNoArgs(q->create_future);
}

void
amongo_queue_retain(AmongoQueue *q)
{
    Py_INCREF(q);
    q->jobs++;
}

void
amongo_queue_release(AmongoQueue *q)
{
    q->jobs--;
    Py_DECREF(q);
}

static int
queue_watch(AmongoState *st, AmongoQueue *q)
{
    if (q->mode == AMONGO_WAKE_EVENTFD) {
        q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (q->efd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        PyObject *drain = PyObject_GetAttr((PyObject *)q, st->str_drain);
        if (!drain)
            return -1;
        PyObject *fd = PyLong_FromLong(q->efd);
        PyObject *r = fd ? PyObject_CallMethodObjArgs(q->loop, st->str_add_reader, fd, drain, NULL)
                         : NULL;
        Py_XDECREF(fd);
        Py_DECREF(drain);
        if (r) {
            Py_DECREF(r);
            q->reader_added = true;
            return 0;
        }
        if (!PyErr_ExceptionMatches(PyExc_NotImplementedError) &&
            !PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        /* This loop cannot watch file descriptors (e.g. a proactor loop): fall back. */
        PyErr_Clear();
        close(q->efd);
        q->efd = -1;
        q->mode = AMONGO_WAKE_THREADSAFE;
    }
    q->call_soon_threadsafe = PyObject_GetAttr(q->loop, st->str_call_soon_threadsafe);
    if (!q->call_soon_threadsafe)
        return -1;
    q->drain = PyObject_GetAttr((PyObject *)q, st->str_drain);
    return q->drain ? 0 : -1;
}

/* Also runs from deallocators at interpreter exit, when module state may be cleared: no state. */
static void
queue_unwatch(AmongoQueue *q)
{
    if (!q->reader_added)
        return;
    q->reader_added = false;
    if (amongo_exiting())
        return; /* loops and modules may be half torn down: the process is going anyway */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    queue_unwatch_reader(q);
    PyErr_Restore(type, value, tb);
}

/* Take the eventfd reader off the loop: from its own thread, or by call_soon_threadsafe. Errors
 * are cleared: a loop that closed meanwhile dropped its readers anyway. */
static void
queue_unwatch_reader(AmongoQueue *q)
{
    if (queue_loop_closed(q) != 0)
        return; /* a closed selector dropped its readers already */
    /* A loop may only be touched from its own thread (uvloop is not thread-safe): ask another
     * thread's loop to do it. The fd stays open meanwhile: the reader's handle keeps us alive. */
    AmongoState *st = amongo_state_from_type(Py_TYPE(q));
    PyObject *running = st && st->get_running_loop ? PyObject_CallNoArgs(st->get_running_loop) : NULL;
    bool own_loop = running == q->loop;
    Py_XDECREF(running);
    PyErr_Clear();
    PyObject *fd = PyLong_FromLong(q->efd);
    PyObject *r = NULL;
    if (fd && own_loop) {
        r = PyObject_CallMethod(q->loop, "remove_reader", "O", fd);
    } else if (fd) {
        PyObject *remove = PyObject_GetAttrString(q->loop, "remove_reader");
        r = remove ? PyObject_CallMethod(q->loop, "call_soon_threadsafe", "OO", remove, fd) : NULL;
        Py_XDECREF(remove);
    }
    Py_XDECREF(fd);
    if (!r)
        PyErr_Clear(); /* the loop closed meanwhile: its selector dropped the reader anyway */
    Py_XDECREF(r);
}

/* BORROWED from `queues` (a dict loop -> queue): the queue of the running loop, made on first use. */
AmongoQueue *
amongo_queue_get(AmongoState *st, PyObject *queues, int mode)
{
    PyObject *loop = PyObject_CallNoArgs(st->get_running_loop);
    if (!loop)
        return NULL;
    AmongoQueue *q = (AmongoQueue *)PyDict_GetItemWithError(queues, loop);
    if (q || PyErr_Occurred()) {
        Py_DECREF(loop);
        return q;
    }
    /* A new loop: forget the queues of loops that were closed meanwhile. */
    if (amongo_queues_sweep(queues, false) < 0) {
        Py_DECREF(loop);
        return NULL;
    }
    q = PyObject_GC_New(AmongoQueue, (PyTypeObject *)st->QueueType);
    if (!q) {
        Py_DECREF(loop);
        return NULL;
    }
    pthread_mutex_init(&q->mu, NULL);
    q->done.head = q->done.tail = NULL;
    q->wake_pending = false;
    q->mode = mode;
    q->efd = -1;
    q->reader_added = false;
    q->detached = false;
    q->jobs = 0;
    q->wakeups = q->drains = q->completions = 0;
    q->loop = loop; /* the reference from CallNoArgs */
    q->create_future = NULL;
    q->call_soon_threadsafe = NULL;
    q->drain = NULL;
    q->weakreflist = NULL;
    PyObject_GC_Track(q);
    q->create_future = PyObject_GetAttr(loop, st->str_create_future);
    if (!q->create_future || queue_watch(st, q) < 0 || PyDict_SetItem(queues, loop, (PyObject *)q) < 0) {
        queue_unwatch(q);
        Py_DECREF(q);
        return NULL;
    }
    Py_DECREF(q); /* the dict holds it */
    return q;
}

/* 1 if the queue's loop is closed, 0 if not, -1 if it cannot tell (a loop half torn down by the
 * collector): the error is cleared, the caller decides. */
static int
queue_loop_closed(AmongoQueue *q)
{
    if (!q->loop)
        return -1;
    PyObject *r = PyObject_CallMethod(q->loop, "is_closed", NULL);
    int closed = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (closed < 0)
        PyErr_Clear();
    return closed;
}

/* Forget queues whose loop is closed (all of them when `all`), discarding their parked completions.
 * A loop that cannot say whether it is closed is left alone unless `all`. Returns the number of
 * queues removed, or -1 with an exception (out of memory only). */
int
amongo_queues_sweep(PyObject *queues, bool all)
{
    PyObject *items = PyDict_Items(queues);
    if (!items)
        return -1;
    int removed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        PyObject *loop = PyTuple_GET_ITEM(pair, 0);
        AmongoQueue *q = (AmongoQueue *)PyTuple_GET_ITEM(pair, 1);
        int closed = queue_loop_closed(q);
        if (closed == 1)
            queue_discard_all(q); /* nobody can ever drain them */
        else if (!all)
            continue;
        if (q->jobs > 0) {
            if (closed == 1)
                continue; /* still running somewhere: a later sweep (destroy()) discards them */
            q->detached = true; /* its loop drains the rest; the last drain unwatches it */
        } else if (closed == 0) {
            queue_unwatch(q);
        }
        if (PyDict_DelItem(queues, loop) < 0) {
            Py_DECREF(items);
            return -1;
        }
        removed++;
    }
    Py_DECREF(items);
    return removed;
}

/* A client's last word on its queues (its finalizer): never raises. Readers are taken off loops
 * that still run, except at interpreter exit, when no Python-level work is done at all. A queue
 * with jobs in flight outlives the dict: each job holds it. */
void
amongo_queues_forget(PyObject *queues)
{
    if (!amongo_exiting() && amongo_queues_sweep(queues, true) < 0)
        PyErr_Clear();
    PyDict_Clear(queues);
}

/* NEW: [{"loop", "wakeup", "in_flight", "completions", "wakeups", "drains"}, ...], one per loop. */
PyObject *
amongo_queues_stats(PyObject *queues)
{
    PyObject *list = PyList_New(0);
    Py_ssize_t pos = 0;
    PyObject *loop, *value;
    while (list && PyDict_Next(queues, &pos, &loop, &value)) {
        AmongoQueue *q = (AmongoQueue *)value;
        pthread_mutex_lock(&q->mu);
        long wakeups = q->wakeups, completions = q->completions;
        pthread_mutex_unlock(&q->mu);
        PyObject *d = Py_BuildValue("{s:O,s:s,s:l,s:l,s:l,s:l}", "loop", loop, "wakeup",
                                    q->mode == AMONGO_WAKE_EVENTFD ? "eventfd" : "threadsafe",
                                    "in_flight", q->jobs, "completions", completions, "wakeups",
                                    wakeups, "drains", q->drains);
        if (!d || PyList_Append(list, d) < 0)
            Py_CLEAR(list);
        Py_XDECREF(d);
    }
    return list;
}

static int
queue_traverse(AmongoQueue *q, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(q));
    Py_VISIT(q->loop);
    Py_VISIT(q->create_future);
    Py_VISIT(q->call_soon_threadsafe);
    Py_VISIT(q->drain);
    return 0;
}

static int
queue_clear(AmongoQueue *q)
{
    Py_CLEAR(q->create_future);
    Py_CLEAR(q->call_soon_threadsafe);
    Py_CLEAR(q->drain);
    Py_CLEAR(q->loop);
    return 0;
}

/* Only reached when no job refers to the queue (each holds a reference), so no worker can touch it. */
static void
queue_dealloc(AmongoQueue *q)
{
    PyTypeObject *tp = Py_TYPE(q);
    PyObject_GC_UnTrack(q);
    if (q->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)q);
    queue_clear(q);
    if (q->efd >= 0)
        close(q->efd);
    pthread_mutex_destroy(&q->mu);
    tp->tp_free(q);
    Py_DECREF(tp);
}

static PyObject *
queue_get_mode(AmongoQueue *q, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(q->mode == AMONGO_WAKE_EVENTFD ? "eventfd" : "threadsafe");
}

static PyObject *
queue_get_loop(AmongoQueue *q, void *Py_UNUSED(closure))
{
    return Py_NewRef(q->loop ? q->loop : Py_None);
}

static PyObject *
queue_get_jobs(AmongoQueue *q, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(q->jobs);
}

static PyMethodDef queue_methods[] = {
    {"drain", (PyCFunction)queue_drain, METH_NOARGS, "Resolve every completed job (loop thread)."},
    {NULL},
};

static PyGetSetDef queue_getset[] = {
    {"mode", (getter)queue_get_mode, NULL, "wake-up path: 'eventfd' or 'threadsafe'", NULL},
    {"loop", (getter)queue_get_loop, NULL, "the event loop this queue completes on", NULL},
    {"jobs", (getter)queue_get_jobs, NULL, "jobs in flight that complete here", NULL},
    {NULL},
};

static PyMemberDef queue_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(AmongoQueue, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot queue_slots[] = {
    {Py_tp_dealloc, queue_dealloc},
    {Py_tp_traverse, queue_traverse},
    {Py_tp_clear, queue_clear},
    {Py_tp_methods, queue_methods},
    {Py_tp_getset, queue_getset},
    {Py_tp_members, queue_members},
    {Py_tp_doc, "Completion queue of one event loop (internal)."},
    {0, NULL},
};

static PyType_Spec queue_spec = {
    .name = "asyncmongo._core.CompletionQueue",
    .basicsize = sizeof(AmongoQueue),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = queue_slots,
};

int
amongo_queue_init_type(PyObject *module, AmongoState *st)
{
    st->QueueType = PyType_FromModuleAndSpec(module, &queue_spec, NULL);
    return st->QueueType ? 0 : -1;
}

