/* jobs.c: the life of one operation: run on a worker (no GIL), then complete on the loop thread.
 * amongo_job_run_nogil hands the job to the runner of its kind (commands.c, bulk.c, sessions.c),
 * which calls libmongoc and leaves plain C results in the job; none touches a PyObject.
 * amongo_job_complete decodes the reply with the core's codec (codec.h: in place, no copy), builds
 * the result or the exception and resolves the future; references are dropped on the loop thread
 * only. */
#include "asyncmongo.h"
#include "codec.h"

AmongoJob *
amongo_job_new(void)
{
    AmongoJob *job = calloc(1, sizeof *job);
    if (!job) {
        PyErr_NoMemory();
        return NULL;
    }
    atomic_fetch_add_explicit(&amongo_counters.jobs_live, 1, memory_order_relaxed);
    return job;
}

void
amongo_job_free(AmongoJob *job)
{
    if (job->has_reply) {
        bson_destroy(&job->reply);
        atomic_fetch_sub_explicit(&amongo_counters.replies_live, 1, memory_order_relaxed);
    }
    bson_free(job->batch);
    amongo_buffer_free(&job->encoded);
    if (job->out_session) /* opened but never handed to a cursor (e.g. it was cancelled) */
        amongo_session_free(job->out_session);
    Py_XDECREF(job->session_obj);
    amongo_apm_free_events(job);
    Py_XDECREF(job->apm_sink);
    Py_XDECREF(job->future);
    Py_XDECREF(job->db_obj);
    Py_XDECREF(job->coll_obj);
    Py_XDECREF(job->cmd_obj);
    Py_XDECREF(job->opts_obj);
    Py_XDECREF(job->read_prefs_obj);
    Py_XDECREF(job->codec_options);
    if (job->queue)
        amongo_queue_release(job->queue);
    if (job->sdam)
        amongo_sdam_decref(job->sdam);
    Py_XDECREF(job->owner);
    free(job);
    atomic_fetch_sub_explicit(&amongo_counters.jobs_live, 1, memory_order_relaxed);
}

/* ---- worker side (no GIL) ---------------------------------------------------------------- */

void
amongo_job_keep_reply_nogil(AmongoJob *job)
{
    job->has_reply = true;
    atomic_fetch_add_explicit(&amongo_counters.replies_live, 1, memory_order_relaxed);
}

void
amongo_job_set_closed(AmongoJob *job)
{
    job->ok = false;
    bson_set_error(&job->error, AMONGO_ERROR_DOMAIN_CLOSED, 1,
                   "Cannot use AsyncMongoClient after close");
}

bool
amongo_job_expired(AmongoJob *job)
{
    if (!job->deadline_us || bson_get_monotonic_time() < job->deadline_us)
        return false;
    job->ok = false;
    bson_set_error(&job->error, AMONGO_ERROR_DOMAIN_TIMEOUT, 50,
                   "operation would exceed time limit: the deadline passed before it was sent");
    return true;
}

void
amongo_job_run_nogil(AmongoJob *job, mongoc_client_t *client)
{
    amongo_apm_set_current_nogil(job);
    job->failed_attempt_us = -1;
    int64_t start = bson_get_monotonic_time();
    switch (job->op) {
    case AMONGO_OP_INSERT:
        amongo_job_run_insert_nogil(job, client);
        break;
    case AMONGO_OP_BULK:
        amongo_job_run_bulk_nogil(job, client);
        break;
    case AMONGO_OP_BARRIER:
    case AMONGO_OP_SDAM: /* a carrier only travels: its events are in the recorder (sdam.c) */
        job->ok = true;
        break;
    case AMONGO_OP_SELECT_SERVER:
        amongo_job_run_select_nogil(job, client);
        break;
    case AMONGO_OP_SESSION_START:
    case AMONGO_OP_TXN_START:
    case AMONGO_OP_TXN_COMMIT:
    case AMONGO_OP_TXN_ABORT:
    case AMONGO_OP_SESSION_END:
        amongo_job_run_session_nogil(job);
        break;
    default:
        amongo_job_run_command_nogil(job, client);
        break;
    }
    job->elapsed_us = bson_get_monotonic_time() - start;
    amongo_apm_set_current_nogil(NULL);
}

/* ---- loop side (GIL held) ---------------------------------------------------------------- */

/* NEW: one BSON document of `len` bytes at `data`, by the core's codec (codec.h), which reads it
 * in place. */
static PyObject *
decode_doc(AmongoState *st, const uint8_t *data, size_t len, PyObject *codec_options)
{
    return amongo_decode_document(st, data, len, codec_options);
}

/* NEW: concatenated documents into a list, in one call. */
static PyObject *
decode_batch(AmongoState *st, const uint8_t *data, size_t len, PyObject *codec_options)
{
    return len ? amongo_decode_documents(st, data, len, codec_options) : PyList_New(0);
}

/* NEW: the value at dotted `path` of the reply, decoded with default options, or None. */
static PyObject *
reply_value(AmongoState *st, const bson_t *reply, const char *path)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, reply) || !bson_iter_find_descendant(&it, path, &it))
        Py_RETURN_NONE;
    bson_t one = BSON_INITIALIZER;
    bson_append_iter(&one, "v", 1, &it);
    PyObject *doc = decode_doc(st, bson_get_data(&one), one.len, st->default_codec_options);
    bson_destroy(&one);
    if (!doc)
        return NULL;
    PyObject *value = PyDict_GetItemString(doc, "v"); /* BORROWED; a dict: default options */
    Py_XINCREF(value);
    Py_DECREF(doc);
    return value ? value : Py_NewRef(Py_None);
}

static PyObject *
reply_ns(const bson_t *reply)
{
    bson_iter_t it;
    if (bson_iter_init(&it, reply) && bson_iter_find_descendant(&it, "cursor.ns", &it) &&
        BSON_ITER_HOLDS_UTF8(&it)) {
        uint32_t len;
        const char *ns = bson_iter_utf8(&it, &len);
        return PyUnicode_DecodeUTF8(ns, len, "replace");
    }
    Py_RETURN_NONE;
}

/* The fields of a CursorBatch (AMONGO_RES_CURSOR, AMONGO_RES_STREAM), in order. */
enum {
    BATCH_CURSOR_ID, BATCH_NAMESPACE, BATCH_DOCUMENTS, BATCH_SERVER_ID, BATCH_SESSION,
    BATCH_RESUME_TOKEN, BATCH_OPERATION_TIME, BATCH_FIELDS
};

static PyStructSequence_Field batch_fields[] = {
    {"cursor_id", "the server cursor's id: 0 once it is exhausted"},
    {"namespace", "db.collection of the cursor, or None"},
    {"documents", "the batch, decoded (a list)"},
    {"server_id", "libmongoc's id of the server the cursor lives on (its getMores go there)"},
    {"session", "capsule of the core session the cursor lives in, or None"},
    {"post_batch_resume_token", "change streams: cursor.postBatchResumeToken, or None"},
    {"operation_time", "change streams: the reply's operationTime, or None"},
    {NULL, NULL},
};

static PyStructSequence_Desc batch_desc = {
    "asyncmongo._core.CursorBatch",
    "One batch of a server cursor, as a cursor job gives it.",
    batch_fields,
    BATCH_FIELDS,
};

int
amongo_jobs_init_types(PyObject *module, AmongoState *st)
{
    st->CursorBatchType = (PyObject *)PyStructSequence_NewType(&batch_desc);
    if (!st->CursorBatchType)
        return -1;
    return PyModule_AddObjectRef(module, "CursorBatch", st->CursorBatchType);
}

/* NEW: the CursorBatch of a cursor job; the cursor's session goes to its capsule. */
static PyObject *
job_cursor_batch(AmongoState *st, AmongoJob *job, PyObject *codec)
{
    PyObject *batch = PyStructSequence_New((PyTypeObject *)st->CursorBatchType);
    if (!batch)
        return NULL;
    bool stream = job->result_kind == AMONGO_RES_STREAM;
    PyObject *session = Py_None;
    if (job->out_session) {
        session = amongo_session_capsule(job->out_session); /* steals it */
        job->out_session = NULL;
    } else {
        Py_INCREF(session);
    }
    PyObject *values[BATCH_FIELDS] = {
        PyLong_FromLongLong(job->cursor_id),
        reply_ns(&job->reply),
        decode_batch(st, job->batch, job->batch_len, codec),
        PyLong_FromUnsignedLong(job->out_server_id),
        session,
        stream ? reply_value(st, &job->reply, "cursor.postBatchResumeToken") : Py_NewRef(Py_None),
        stream ? reply_value(st, &job->reply, "operationTime") : Py_NewRef(Py_None),
    };
    bool ok = true;
    for (int i = 0; i < BATCH_FIELDS; i++) {
        ok = ok && values[i];
        PyStructSequence_SET_ITEM(batch, i, values[i] ? values[i] : Py_NewRef(Py_None));
    }
    if (!ok)
        Py_CLEAR(batch); /* an exception is set by what failed */
    return batch;
}

/* NEW: the result object, or NULL with an exception set (a decode failure is the job's exception). */
static PyObject *
job_result(AmongoState *st, AmongoJob *job)
{
    PyObject *codec = job->codec_options ? job->codec_options : st->default_codec_options;
    switch (job->result_kind) {
    case AMONGO_RES_NONE:
        Py_RETURN_NONE;
    case AMONGO_RES_FIRST:
        if (!job->first)
            Py_RETURN_NONE;
        {
            uint32_t len;
            memcpy(&len, job->first, 4);
            return decode_doc(st, job->first, BSON_UINT32_FROM_LE(len), codec);
        }
    case AMONGO_RES_CURSOR:
    case AMONGO_RES_STREAM:
        return job_cursor_batch(st, job, codec);
    case AMONGO_RES_SESSION:
        if (job->out_session) {
            AmongoSession *s = job->out_session;
            job->out_session = NULL;
            return amongo_session_capsule(s); /* steals it */
        }
        Py_RETURN_NONE;
    case AMONGO_RES_SERVER:
        return amongo_select_result(st, job);
    case AMONGO_RES_WRITE:
    case AMONGO_RES_BULK:
        /* Write results are read by the driver, not the user: PyMongo decodes them with defaults. */
        return decode_doc(st, bson_get_data(&job->reply), job->reply.len, st->default_codec_options);
    default:
        return decode_doc(st, bson_get_data(&job->reply), job->reply.len, codec);
    }
}

static void
future_resolve(AmongoState *st, PyObject *future, PyObject *value, bool is_exception)
{
    PyObject *r = PyObject_CallMethodOneArg(future, is_exception ? st->str_set_exception
                                                                 : st->str_set_result, value);
    if (!r)
        PyErr_WriteUnraisable(future);
    Py_XDECREF(r);
}

/* NEW: the value of a write job: its reply, or the exception its reply or libmongoc's verdict
 * calls for. Write errors come back in an ok reply, and a failed bulk still carries its partial
 * result: the reply is looked at before libmongoc's verdict. Sets *is_exception. */
static PyObject *
job_write_outcome(AmongoState *st, AmongoJob *job, bool *is_exception)
{
    PyObject *value = job_result(st, job);
    if (!value)
        return NULL;
    PyObject *exc = amongo_write_error(st, value, job->result_kind == AMONGO_RES_BULK);
    if (!exc && !PyErr_Occurred() && job->ok)
        return value;
    Py_DECREF(value);
    *is_exception = true;
    if (exc || PyErr_Occurred())
        return exc;
    return amongo_error_from_job(st, job);
}

/* NEW: the pending exception (normalised, with its traceback) as a value, clearing it; a
 * SystemError if none is set. For a failure while building a job's result or exception: that
 * failure is what the caller gets. */
static PyObject *
fetch_exception_value(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (!value)
        value = PyObject_CallFunction(PyExc_SystemError, "s", "asyncmongo: job without result");
    return value;
}

void
amongo_job_complete(AmongoState *st, AmongoJob *job)
{
    if (job->op == AMONGO_OP_SDAM) { /* not an operation: nobody awaits it */
        amongo_sdam_deliver(st, job);
        return;
    }
    atomic_fetch_add_explicit(&amongo_counters.jobs_completed, 1, memory_order_relaxed);
    PyObject *done = PyObject_CallMethodNoArgs(job->future, st->str_done);
    int is_done = done ? PyObject_IsTrue(done) : -1;
    Py_XDECREF(done);
    if (is_done < 0) {
        if (job->stats)
            job->stats->failed++;
        PyErr_WriteUnraisable(job->future);
        return;
    }
    /* Listeners hear about the commands before the caller hears the outcome, as with PyMongo. */
    if (job->events && amongo_apm_deliver(st, job) < 0)
        PyErr_WriteUnraisable(job->future);
    if (is_done) { /* cancelled while it ran: the result is dropped */
        if (job->stats)
            job->stats->cancelled++;
        return;
    }
    if (job->flags & AMONGO_FLAG_QUIET) {
        if (job->stats)
            job->stats->completed++;
        future_resolve(st, job->future, Py_None, false);
        return;
    }
    PyObject *value;
    bool is_exception = false;
    bool write = job->result_kind == AMONGO_RES_WRITE || job->result_kind == AMONGO_RES_BULK;
    if (write && job->has_reply) {
        value = job_write_outcome(st, job, &is_exception);
    } else if (job->ok) {
        value = job_result(st, job);
    } else {
        value = amongo_error_from_job(st, job);
        is_exception = true;
    }
    if (!value) {
        value = fetch_exception_value();
        is_exception = true;
        if (!value) {
            if (job->stats)
                job->stats->failed++;
            PyErr_WriteUnraisable(job->future);
            return;
        }
    }
    if (job->stats)
        (is_exception ? &job->stats->failed : &job->stats->completed)[0]++;
    future_resolve(st, job->future, value, is_exception);
    Py_DECREF(value);
}

void
amongo_job_discard(AmongoJob *job)
{
    if (job->op == AMONGO_OP_SDAM) {
        amongo_sdam_dropped(job);
        return;
    }
    if (job->stats)
        job->stats->cancelled++;
    atomic_fetch_add_explicit(&amongo_counters.jobs_completed, 1, memory_order_relaxed);
}
