/* sdam.c: SDAM and heartbeat monitoring from libmongoc's APM callbacks, and the latest topology.
 * libmongoc calls the callbacks on its server monitor threads (and on workers, when an operation's
 * error marks a server Unknown), holding its own APM mutex and without the GIL: they only copy the
 * event into a plain C record (BSON, topology.c) and never take the GIL. The records wait in order
 * in the recorder; a carrier job (AMONGO_OP_SDAM), armed on a loop thread, is handed to that loop's
 * completion queue by the first event after arming (GIL-free through the eventfd; through a worker
 * on the call_soon_threadsafe path, whose wake-up needs the GIL), and the drain delivers every
 * waiting record to the client's sink, then arms a new carrier. */
#include "asyncmongo.h"

/* Records beyond this many, undelivered (a client no loop has used yet), drop the oldest. */
#define SDAM_MAX_RECORDS 10000

typedef struct SdamRecord {
    struct SdamRecord *next;
    bson_t *doc; /* {k: kind, tid, h, p, aw, d, r, e: {dom, code, msg}, prev, new}; a pointer:
                  * a bson_t wants an alignment calloc does not give */
} SdamRecord;

struct AmongoSdam {
    atomic_int refs;
    bool record;               /* the client has SDAM listeners: record events (fixed at birth) */
    pthread_mutex_t mu;        /* protects what follows; held briefly, never while waiting for the
                                * GIL, so a thread holding the GIL may take it */
    pthread_cond_t changed;    /* the topology was replaced */
    SdamRecord *head, *tail;
    size_t count, dropped;
    AmongoJob *carrier;        /* armed: the next event hands it to its loop */
    bool in_flight;            /* a carrier is on its way to its loop, or queued there */
    bool closed;               /* the client closed: no carrier is taken any more */
    bool via_pool;             /* the carrier's queue wakes by call_soon_threadsafe */
    AmongoPool *pool;          /* workers for that path: alive as long as callbacks may come */
    bson_t *topology;          /* {t: topology facts} of the latest description, or NULL */
    bool writable;             /* it has a writable server */
    AmongoAddress *members;    /* the servers libmongoc opened and has not closed */
    size_t n_members, cap_members;
};

AmongoSdam *
amongo_sdam_new(bool record_events)
{
    AmongoSdam *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    s->record = record_events;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->changed, NULL);
    return s;
}

void
amongo_sdam_incref(AmongoSdam *s)
{
    atomic_fetch_add(&s->refs, 1);
}

static void
records_free(SdamRecord *r)
{
    while (r) {
        SdamRecord *next = r->next;
        bson_destroy(r->doc);
        free(r);
        r = next;
    }
}

/* The last reference goes when the client, its pool's teardown (after the last callback) and every
 * carrier are gone: no armed carrier is left by then (amongo_sdam_close). */
void
amongo_sdam_decref(AmongoSdam *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    records_free(s->head);
    free(s->members);
    if (s->topology)
        bson_destroy(s->topology);
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- recording (libmongoc's threads, no GIL) ---------------------------------------------- */

static SdamRecord *
record_new_nogil(int kind)
{
    SdamRecord *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->doc = bson_new();
    bson_append_int32(r->doc, "k", 1, kind);
    return r;
}

/* Hand the carrier to its loop's queue: directly (eventfd, no GIL), or through a worker (the
 * threadsafe wake-up takes the GIL, which a libmongoc callback must not wait for). A pool that no
 * longer takes jobs (the client is closing) leaves the direct push, GIL and all: that race is
 * rare and short. */
static void
carrier_send_nogil(AmongoJob *job, AmongoPool *pool, bool via_pool)
{
    if (via_pool && amongo_pool_submit(pool, job) == 0)
        return;
    amongo_queue_push_from_worker(job->queue, job);
}

/* Append `r` (taken over), and take the armed carrier if there is one. */
static void
record_push_nogil(AmongoSdam *s, SdamRecord *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->count >= SDAM_MAX_RECORDS) {
        SdamRecord *oldest = s->head;
        s->head = oldest->next;
        if (!s->head)
            s->tail = NULL;
        oldest->next = NULL;
        records_free(oldest);
        s->count--;
        s->dropped++;
    }
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->count++;
    AmongoJob *go = s->closed ? NULL : s->carrier;
    if (go) {
        s->carrier = NULL;
        s->in_flight = true;
    }
    AmongoPool *pool = s->pool;
    bool via_pool = s->via_pool;
    pthread_mutex_unlock(&s->mu);
    if (go)
        carrier_send_nogil(go, pool, via_pool);
}

static void
append_host_nogil(bson_t *doc, const mongoc_host_list_t *host)
{
    if (!host)
        return;
    bson_append_utf8(doc, "h", 1, host->host, -1);
    bson_append_int32(doc, "p", 1, host->port);
}

static void
append_error_nogil(bson_t *doc, const bson_error_t *error)
{
    bson_t e;
    bson_append_document_begin(doc, "e", 1, &e);
    bson_append_int32(&e, "dom", 3, (int32_t)error->domain);
    bson_append_int32(&e, "code", 4, (int32_t)error->code);
    bson_append_utf8(&e, "msg", 3, error->message, -1);
    bson_append_document_end(doc, &e);
}

static void
on_server_changed_nogil(const mongoc_apm_server_changed_t *e)
{
    AmongoSdam *s = mongoc_apm_server_changed_get_context(e);
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_SERVER_CHANGED);
    if (!r)
        return;
    bson_oid_t tid;
    mongoc_apm_server_changed_get_topology_id(e, &tid);
    bson_append_oid(r->doc, "tid", 3, &tid);
    append_host_nogil(r->doc, mongoc_apm_server_changed_get_host(e));
    amongo_server_facts_append_nogil(r->doc, "prev", mongoc_apm_server_changed_get_previous_description(e));
    amongo_server_facts_append_nogil(r->doc, "new", mongoc_apm_server_changed_get_new_description(e));
    record_push_nogil(s, r);
}

/* The members, copied under the mutex (caller frees), for a topology's Unknown servers. */
static AmongoAddress *
members_copy_nogil(AmongoSdam *s, size_t *n)
{
    pthread_mutex_lock(&s->mu);
    *n = s->n_members;
    AmongoAddress *copy = *n ? malloc(*n * sizeof *copy) : NULL;
    if (copy)
        memcpy(copy, s->members, *n * sizeof *copy);
    else
        *n = 0;
    pthread_mutex_unlock(&s->mu);
    return copy;
}

static void
members_update_nogil(AmongoSdam *s, const mongoc_host_list_t *host, bool add)
{
    pthread_mutex_lock(&s->mu);
    size_t i = 0;
    while (i < s->n_members &&
           (s->members[i].port != host->port || strcmp(s->members[i].host, host->host)))
        i++;
    if (!add && i < s->n_members) {
        s->members[i] = s->members[--s->n_members];
    } else if (add && i == s->n_members) {
        if (s->n_members == s->cap_members) {
            size_t cap = s->cap_members ? 2 * s->cap_members : 4;
            AmongoAddress *grown = realloc(s->members, cap * sizeof *grown);
            if (!grown) {
                pthread_mutex_unlock(&s->mu);
                return;
            }
            s->members = grown;
            s->cap_members = cap;
        }
        bson_strncpy(s->members[i].host, host->host, sizeof s->members[i].host);
        s->members[i].port = host->port;
        s->n_members++;
    }
    pthread_mutex_unlock(&s->mu);
}

static void
on_server_opening_nogil(const mongoc_apm_server_opening_t *e)
{
    AmongoSdam *s = mongoc_apm_server_opening_get_context(e);
    members_update_nogil(s, mongoc_apm_server_opening_get_host(e), true);
    if (!s->record)
        return;
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_SERVER_OPENING);
    if (!r)
        return;
    bson_oid_t tid;
    mongoc_apm_server_opening_get_topology_id(e, &tid);
    bson_append_oid(r->doc, "tid", 3, &tid);
    append_host_nogil(r->doc, mongoc_apm_server_opening_get_host(e));
    record_push_nogil(s, r);
}

static void
on_server_closed_nogil(const mongoc_apm_server_closed_t *e)
{
    AmongoSdam *s = mongoc_apm_server_closed_get_context(e);
    members_update_nogil(s, mongoc_apm_server_closed_get_host(e), false);
    if (!s->record)
        return;
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_SERVER_CLOSED);
    if (!r)
        return;
    bson_oid_t tid;
    mongoc_apm_server_closed_get_topology_id(e, &tid);
    bson_append_oid(r->doc, "tid", 3, &tid);
    append_host_nogil(r->doc, mongoc_apm_server_closed_get_host(e));
    record_push_nogil(s, r);
}

/* Always installed (with server opening/closed, which keep the members): the latest description
 * is the client's topology facts. */
static void
on_topology_changed_nogil(const mongoc_apm_topology_changed_t *e)
{
    AmongoSdam *s = mongoc_apm_topology_changed_get_context(e);
    const mongoc_topology_description_t *td = mongoc_apm_topology_changed_get_new_description(e);
    size_t n_members;
    AmongoAddress *members = members_copy_nogil(s, &n_members);
    bson_t *latest = bson_new();
    amongo_topology_facts_append_nogil(latest, "t", td, members, n_members);
    bool writable = mongoc_topology_description_has_writable_server(td);
    pthread_mutex_lock(&s->mu);
    bson_t *old = s->topology;
    s->topology = latest;
    s->writable = writable;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->mu);
    if (old)
        bson_destroy(old);
    SdamRecord *r = s->record ? record_new_nogil(AMONGO_SDAM_TOPOLOGY_CHANGED) : NULL;
    if (!r) {
        free(members);
        return;
    }
    bson_oid_t tid;
    mongoc_apm_topology_changed_get_topology_id(e, &tid);
    bson_append_oid(r->doc, "tid", 3, &tid);
    amongo_topology_facts_append_nogil(
        r->doc, "prev", mongoc_apm_topology_changed_get_previous_description(e), members, n_members);
    amongo_topology_facts_append_nogil(r->doc, "new", td, members, n_members);
    free(members);
    record_push_nogil(s, r);
}

static void
on_topology_opening_nogil(const mongoc_apm_topology_opening_t *e)
{
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_TOPOLOGY_OPENING);
    if (!r)
        return;
    bson_oid_t tid;
    mongoc_apm_topology_opening_get_topology_id(e, &tid);
    bson_append_oid(r->doc, "tid", 3, &tid);
    record_push_nogil(mongoc_apm_topology_opening_get_context(e), r);
}

static void
on_topology_closed_nogil(const mongoc_apm_topology_closed_t *e)
{
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_TOPOLOGY_CLOSED);
    if (!r)
        return;
    bson_oid_t tid;
    mongoc_apm_topology_closed_get_topology_id(e, &tid);
    bson_append_oid(r->doc, "tid", 3, &tid);
    record_push_nogil(mongoc_apm_topology_closed_get_context(e), r);
}

static void
on_heartbeat_started_nogil(const mongoc_apm_server_heartbeat_started_t *e)
{
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_HEARTBEAT_STARTED);
    if (!r)
        return;
    append_host_nogil(r->doc, mongoc_apm_server_heartbeat_started_get_host(e));
    bson_append_bool(r->doc, "aw", 2, mongoc_apm_server_heartbeat_started_get_awaited(e));
    record_push_nogil(mongoc_apm_server_heartbeat_started_get_context(e), r);
}

static void
on_heartbeat_succeeded_nogil(const mongoc_apm_server_heartbeat_succeeded_t *e)
{
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_HEARTBEAT_SUCCEEDED);
    if (!r)
        return;
    append_host_nogil(r->doc, mongoc_apm_server_heartbeat_succeeded_get_host(e));
    bson_append_bool(r->doc, "aw", 2, mongoc_apm_server_heartbeat_succeeded_get_awaited(e));
    bson_append_int64(r->doc, "d", 1, mongoc_apm_server_heartbeat_succeeded_get_duration(e));
    bson_append_document(r->doc, "r", 1, mongoc_apm_server_heartbeat_succeeded_get_reply(e));
    record_push_nogil(mongoc_apm_server_heartbeat_succeeded_get_context(e), r);
}

static void
on_heartbeat_failed_nogil(const mongoc_apm_server_heartbeat_failed_t *e)
{
    SdamRecord *r = record_new_nogil(AMONGO_SDAM_HEARTBEAT_FAILED);
    if (!r)
        return;
    append_host_nogil(r->doc, mongoc_apm_server_heartbeat_failed_get_host(e));
    bson_append_bool(r->doc, "aw", 2, mongoc_apm_server_heartbeat_failed_get_awaited(e));
    bson_append_int64(r->doc, "d", 1, mongoc_apm_server_heartbeat_failed_get_duration(e));
    bson_error_t error;
    mongoc_apm_server_heartbeat_failed_get_error(e, &error);
    append_error_nogil(r->doc, &error);
    record_push_nogil(mongoc_apm_server_heartbeat_failed_get_context(e), r);
}

/* The callbacks go in the pool's one APM callback set (apm.c), with the recorder as context. */
void
amongo_sdam_set_callbacks(AmongoSdam *s, mongoc_apm_callbacks_t *cbs)
{
    mongoc_apm_set_topology_changed_cb(cbs, on_topology_changed_nogil);
    mongoc_apm_set_server_opening_cb(cbs, on_server_opening_nogil);
    mongoc_apm_set_server_closed_cb(cbs, on_server_closed_nogil);
    if (!s->record)
        return; /* nobody listens: heartbeats cost nothing */
    mongoc_apm_set_server_changed_cb(cbs, on_server_changed_nogil);
    mongoc_apm_set_topology_opening_cb(cbs, on_topology_opening_nogil);
    mongoc_apm_set_topology_closed_cb(cbs, on_topology_closed_nogil);
    mongoc_apm_set_server_heartbeat_started_cb(cbs, on_heartbeat_started_nogil);
    mongoc_apm_set_server_heartbeat_succeeded_cb(cbs, on_heartbeat_succeeded_nogil);
    mongoc_apm_set_server_heartbeat_failed_cb(cbs, on_heartbeat_failed_nogil);
}

/* Pure C, any thread: wait (up to timeout_ms) until the topology has a writable server. */
bool
amongo_sdam_wait_writable_nogil(AmongoSdam *s, int64_t timeout_ms)
{
    int64_t deadline_us = bson_get_monotonic_time() + timeout_ms * 1000;
    pthread_mutex_lock(&s->mu);
    while (!s->writable && !s->closed) {
        int64_t left_us = deadline_us - bson_get_monotonic_time();
        if (left_us <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (left_us < 100000 ? left_us : 100000) * 1000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&s->changed, &s->mu, &ts);
    }
    bool writable = s->writable;
    pthread_mutex_unlock(&s->mu);
    return writable;
}

/* ---- the loop side (GIL held) ------------------------------------------------------------- */

static void
carrier_free(AmongoJob *job)
{
    AmongoSdam *s = job->sdam;
    job->sdam = NULL;
    amongo_job_free(job);
    if (s)
        amongo_sdam_decref(s);
}

/* Arm a carrier on queue `q` (the loop of the client's latest operation): the next event sends it
 * there, and if events are waiting already it goes now. An armed carrier on another queue is
 * replaced; one in flight re-arms when delivered. 0, or -1 with an exception. */
int
amongo_sdam_arm(AmongoSdam *s, AmongoQueue *q, PyObject *sink, AmongoPool *pool, bool via_pool)
{
    pthread_mutex_lock(&s->mu);
    bool nothing = s->closed || s->in_flight || (s->carrier && s->carrier->queue == q);
    AmongoJob *old = nothing ? NULL : s->carrier;
    if (!nothing)
        s->carrier = NULL;
    pthread_mutex_unlock(&s->mu);
    if (nothing)
        return 0;
    if (old)
        carrier_free(old);
    AmongoJob *job = amongo_job_new();
    if (!job)
        return -1;
    job->op = AMONGO_OP_SDAM;
    job->result_kind = AMONGO_RES_NONE;
    job->ok = true;
    job->apm_sink = Py_NewRef(sink);
    amongo_queue_retain(q);
    job->queue = q;
    amongo_sdam_incref(s);
    job->sdam = s;

    pthread_mutex_lock(&s->mu);
    bool lost = s->closed || s->in_flight || s->carrier;
    AmongoJob *go = NULL;
    if (!lost) {
        s->pool = pool;
        s->via_pool = via_pool;
        if (s->head) {
            go = job;
            s->in_flight = true;
        } else {
            s->carrier = job;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (lost)
        carrier_free(job);
    else if (go)
        carrier_send_nogil(go, pool, via_pool);
    return 0;
}

/* No more deliveries (the client is closing): the armed carrier is freed; one in flight delivers
 * nothing when it arrives. */
void
amongo_sdam_close(AmongoSdam *s)
{
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    AmongoJob *job = s->carrier;
    s->carrier = NULL;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->mu);
    if (job)
        carrier_free(job);
}

/* The armed carrier's references belong to the client (its owner): the collector must see them. */
int
amongo_sdam_traverse(AmongoSdam *s, visitproc visit, void *arg)
{
    pthread_mutex_lock(&s->mu);
    AmongoJob *job = s->carrier;
    PyObject *sink = job ? job->apm_sink : NULL;
    PyObject *queue = job ? (PyObject *)job->queue : NULL;
    pthread_mutex_unlock(&s->mu);
    Py_VISIT(sink);
    Py_VISIT(queue);
    return 0;
}

/* NEW: the exception an error record {dom, code, msg} stands for (the operations' error table). */
static PyObject *
record_error(AmongoState *st, PyObject *e)
{
    bson_error_t error = {0};
    PyObject *dom = PyDict_GetItemString(e, "dom"), *code = PyDict_GetItemString(e, "code");
    PyObject *msg = PyDict_GetItemString(e, "msg");
    error.domain = dom ? (uint32_t)PyLong_AsUnsignedLong(dom) : 0;
    error.code = code ? (uint32_t)PyLong_AsUnsignedLong(code) : 0;
    const char *text = msg ? PyUnicode_AsUTF8(msg) : "";
    if (PyErr_Occurred())
        return NULL;
    bson_strncpy(error.message, text ? text : "", sizeof error.message);
    amongo_set_error(st, &error);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

enum {
    EV_KIND, EV_TOPOLOGY_ID, EV_ADDRESS, EV_AWAITED, EV_DURATION, EV_REPLY, EV_ERROR, EV_PREVIOUS,
    EV_NEW, EV_FIELDS
};

static PyStructSequence_Field event_fields[] = {
    {"kind", "SDAM_*: which libmongoc callback recorded it"},
    {"topology_id", "the topology's ObjectId (server and topology events), else None"},
    {"address", "(host, port) of the server, or None"},
    {"awaited", "heartbeats: an awaitable (streaming) hello"},
    {"duration_us", "heartbeat succeeded/failed: how long it took"},
    {"reply", "heartbeat succeeded: the hello reply"},
    {"error", "heartbeat failed: the exception (pymongo.errors), as for an operation"},
    {"previous", "description changed: the previous ServerFacts or TopologyFacts"},
    {"new", "description changed: the new ServerFacts or TopologyFacts"},
    {NULL, NULL},
};

static PyStructSequence_Desc event_desc = {
    "asyncmongo._core.SdamEvent", "One SDAM or heartbeat event, as libmongoc reported it.",
    event_fields, EV_FIELDS,
};

int
amongo_sdam_init_types(PyObject *module, AmongoState *st)
{
    st->SdamEventType = (PyObject *)PyStructSequence_NewType(&event_desc);
    if (!st->SdamEventType)
        return -1;
    return PyModule_AddObjectRef(module, "SdamEvent", st->SdamEventType);
}

/* NEW: doc[key] (a borrowed item) passed through `conv`, or None when absent. */
static PyObject *
field(AmongoState *st, PyObject *doc, const char *key, PyObject *(*conv)(AmongoState *, PyObject *))
{
    PyObject *v = PyDict_GetItemString(doc, key);
    if (!v)
        Py_RETURN_NONE;
    return conv ? conv(st, v) : Py_NewRef(v);
}

/* NEW: the SdamEvent of one record. */
static PyObject *
record_event(AmongoState *st, const SdamRecord *r)
{
    PyObject *view = PyMemoryView_FromMemory((char *)bson_get_data(r->doc), r->doc->len, PyBUF_READ);
    PyObject *doc = view ? PyObject_CallFunctionObjArgs(st->bson_to_dict, view,
                                                         st->default_codec_options, NULL)
                         : NULL;
    Py_XDECREF(view);
    if (!doc)
        return NULL;
    PyObject *host = PyDict_GetItemString(doc, "h"), *port = PyDict_GetItemString(doc, "p");
    PyObject *awaited = PyDict_GetItemString(doc, "aw");
    PyObject *values[EV_FIELDS] = {
        field(st, doc, "k", NULL),
        field(st, doc, "tid", NULL),
        host && port ? PyTuple_Pack(2, host, port) : Py_NewRef(Py_None),
        PyBool_FromLong(awaited && PyObject_IsTrue(awaited)),
        PyDict_GetItemString(doc, "d") ? field(st, doc, "d", NULL) : PyLong_FromLong(0),
        field(st, doc, "r", NULL),
        field(st, doc, "e", record_error),
        field(st, doc, "prev", amongo_facts_py),
        field(st, doc, "new", amongo_facts_py),
    };
    Py_DECREF(doc);
    PyObject *ev = PyStructSequence_New((PyTypeObject *)st->SdamEventType);
    bool ok = ev != NULL;
    for (int i = 0; i < EV_FIELDS; i++) {
        ok = ok && values[i];
        if (ev)
            PyStructSequence_SET_ITEM(ev, i, values[i] ? values[i] : Py_NewRef(Py_None));
        else
            Py_XDECREF(values[i]);
    }
    if (!ok)
        Py_CLEAR(ev);
    return ev;
}

/* From a drain of the carrier's loop: arm the next carrier here, then hand every waiting record,
 * in order, to the sink: sink([SdamEvent, ...], dropped). The carrier is freed by the drain. */
void
amongo_sdam_deliver(AmongoState *st, AmongoJob *carrier)
{
    AmongoSdam *s = carrier->sdam;
    pthread_mutex_lock(&s->mu);
    SdamRecord *records = s->head;
    size_t dropped = s->dropped;
    s->head = s->tail = NULL;
    s->count = s->dropped = 0;
    s->in_flight = false;
    bool closed = s->closed;
    AmongoPool *pool = s->pool;
    bool via_pool = s->via_pool;
    pthread_mutex_unlock(&s->mu);
    if (!closed && amongo_sdam_arm(s, carrier->queue, carrier->apm_sink, pool, via_pool) < 0)
        PyErr_WriteUnraisable(carrier->apm_sink);
    PyObject *list = closed || !records ? NULL : PyList_New(0);
    for (SdamRecord *r = records; list && r; r = r->next) {
        PyObject *ev = record_event(st, r);
        if (!ev || PyList_Append(list, ev) < 0) {
            Py_XDECREF(ev);
            Py_CLEAR(list);
        }
        Py_XDECREF(ev);
    }
    records_free(records);
    if (list) {
        PyObject *r = PyObject_CallFunction(carrier->apm_sink, "On", list, (Py_ssize_t)dropped);
        if (!r)
            PyErr_WriteUnraisable(carrier->apm_sink);
        Py_XDECREF(r);
        Py_DECREF(list);
    } else if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(carrier->apm_sink);
    }
    carrier->sdam = NULL;
    amongo_sdam_decref(s);
}

/* A carrier discarded (its loop closed): the next operation on a live loop arms another. */
void
amongo_sdam_dropped(AmongoJob *carrier)
{
    AmongoSdam *s = carrier->sdam;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->in_flight = false;
    pthread_mutex_unlock(&s->mu);
    carrier->sdam = NULL;
    amongo_sdam_decref(s);
}

/* NEW: the latest TopologyFacts, or None before libmongoc described the deployment. */
PyObject *
amongo_sdam_topology(AmongoState *st, AmongoSdam *s)
{
    pthread_mutex_lock(&s->mu);
    bson_t *copy = s->topology ? bson_copy(s->topology) : NULL;
    pthread_mutex_unlock(&s->mu);
    if (!copy)
        Py_RETURN_NONE;
    PyObject *view = PyMemoryView_FromMemory((char *)bson_get_data(copy), copy->len, PyBUF_READ);
    PyObject *doc = view ? PyObject_CallFunctionObjArgs(st->bson_to_dict, view,
                                                         st->default_codec_options, NULL)
                         : NULL;
    Py_XDECREF(view);
    bson_destroy(copy);
    PyObject *t = doc ? PyDict_GetItemString(doc, "t") : NULL;
    PyObject *facts = t ? amongo_facts_py(st, t) : NULL;
    if (doc && !t && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "asyncmongo: topology record without facts");
    Py_XDECREF(doc);
    return facts;
}
