/* apm.c: command monitoring from libmongoc's APM callbacks, delivered on the loop thread.
 * libmongoc calls the callbacks on the worker running the command, without the GIL: they copy what
 * the event says into plain C records on the job being run (a thread-local says which). When the
 * job completes, the loop thread hands the records to the client's sink, which builds PyMongo's
 * event objects and calls the listeners, before the operation's future resolves. */
#include "asyncmongo.h"
#include "codec.h"

static _Thread_local AmongoJob *current_job;

void
amongo_apm_set_current_nogil(AmongoJob *job)
{
    current_job = job;
}

static AmongoEvent *
event_new_nogil(int kind, const char *command_name, const mongoc_host_list_t *host)
{
    AmongoJob *job = current_job;
    if (!job || !(job->flags & AMONGO_FLAG_APM))
        return NULL; /* a command of libmongoc's own (endSessions at teardown): not the user's */
    AmongoEvent *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->kind = kind;
    bson_strncpy(ev->command_name, command_name ? command_name : "", sizeof ev->command_name);
    if (host) {
        bson_strncpy(ev->host, host->host, sizeof ev->host);
        ev->port = host->port;
    }
    if (job->events_tail)
        job->events_tail->next = ev;
    else
        job->events = ev;
    job->events_tail = ev;
    return ev;
}

static void
on_started_nogil(const mongoc_apm_command_started_t *e)
{
    AmongoEvent *ev = event_new_nogil(0, mongoc_apm_command_started_get_command_name(e),
                                      mongoc_apm_command_started_get_host(e));
    if (!ev)
        return;
    bson_strncpy(ev->database, mongoc_apm_command_started_get_database_name(e), sizeof ev->database);
    ev->request_id = mongoc_apm_command_started_get_request_id(e);
    ev->operation_id = mongoc_apm_command_started_get_operation_id(e);
    ev->server_connection_id = mongoc_apm_command_started_get_server_connection_id(e);
    bson_copy_to(mongoc_apm_command_started_get_command(e), &ev->doc);
}

static void
on_succeeded_nogil(const mongoc_apm_command_succeeded_t *e)
{
    AmongoEvent *ev = event_new_nogil(1, mongoc_apm_command_succeeded_get_command_name(e),
                                      mongoc_apm_command_succeeded_get_host(e));
    if (!ev)
        return;
    ev->request_id = mongoc_apm_command_succeeded_get_request_id(e);
    ev->operation_id = mongoc_apm_command_succeeded_get_operation_id(e);
    ev->duration_us = mongoc_apm_command_succeeded_get_duration(e);
    ev->server_connection_id = mongoc_apm_command_succeeded_get_server_connection_id(e);
    bson_copy_to(mongoc_apm_command_succeeded_get_reply(e), &ev->doc);
}

static void
on_failed_nogil(const mongoc_apm_command_failed_t *e)
{
    /* Every job: the attempt's own duration tells a socket timeout from a reset (errors.c),
     * which the job's whole time cannot once a retry waited for server selection. */
    if (current_job)
        current_job->failed_attempt_us = mongoc_apm_command_failed_get_duration(e);
    AmongoEvent *ev = event_new_nogil(2, mongoc_apm_command_failed_get_command_name(e),
                                      mongoc_apm_command_failed_get_host(e));
    if (!ev)
        return;
    ev->request_id = mongoc_apm_command_failed_get_request_id(e);
    ev->operation_id = mongoc_apm_command_failed_get_operation_id(e);
    ev->duration_us = mongoc_apm_command_failed_get_duration(e);
    ev->server_connection_id = mongoc_apm_command_failed_get_server_connection_id(e);
    mongoc_apm_command_failed_get_error(e, &ev->error);
    const bson_t *reply = mongoc_apm_command_failed_get_reply(e);
    if (reply)
        bson_copy_to(reply, &ev->doc);
    else
        bson_init(&ev->doc);
}

/* Before the pool hands out its first client (libmongoc takes one callback set per pool, once):
 * the failed callback always (it times failed attempts, and libmongoc calls it only on failures),
 * the started and succeeded ones only if `commands` (listeners), the SDAM ones of the recorder
 * (sdam.c), its context. */
void
amongo_apm_install(mongoc_client_pool_t *pool, bool commands, AmongoSdam *sdam)
{
    mongoc_apm_callbacks_t *cbs = mongoc_apm_callbacks_new();
    if (commands) {
        mongoc_apm_set_command_started_cb(cbs, on_started_nogil);
        mongoc_apm_set_command_succeeded_cb(cbs, on_succeeded_nogil);
    }
    mongoc_apm_set_command_failed_cb(cbs, on_failed_nogil);
    amongo_sdam_set_callbacks(sdam, cbs);
    mongoc_client_pool_set_apm_callbacks(pool, cbs, sdam);
    mongoc_apm_callbacks_destroy(cbs);
}

void
amongo_apm_free_events(AmongoJob *job)
{
    AmongoEvent *ev = job->events;
    while (ev) {
        AmongoEvent *next = ev->next;
        bson_destroy(&ev->doc);
        free(ev);
        ev = next;
    }
    job->events = job->events_tail = NULL;
}

/* Loop thread: sink([(kind, command_name, database, (host, port), request_id, operation_id,
 * duration_us, server_connection_id, doc, error_message, error_code), ...]). Returns -1 with an
 * exception set if building the list failed; a listener's own exception is the sink's business. */
int
amongo_apm_deliver(AmongoState *st, AmongoJob *job)
{
    if (!job->events || !job->apm_sink)
        return 0;
    PyObject *list = PyList_New(0);
    if (!list)
        return -1;
    for (AmongoEvent *ev = job->events; ev; ev = ev->next) {
        PyObject *doc = amongo_decode_document(st, bson_get_data(&ev->doc), ev->doc.len, NULL);
        PyObject *item = doc ? Py_BuildValue("(iss(sH)LLLiNsI)", ev->kind, ev->command_name,
                                             ev->database, ev->host, ev->port,
                                             (long long)ev->request_id, (long long)ev->operation_id,
                                             (long long)ev->duration_us, ev->server_connection_id,
                                             doc, ev->error.message, ev->error.code)
                             : NULL;
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return -1;
        }
        Py_DECREF(item);
    }
    PyObject *r = PyObject_CallOneArg(job->apm_sink, list);
    Py_DECREF(list);
    if (!r)
        PyErr_WriteUnraisable(job->apm_sink);
    Py_XDECREF(r);
    return 0;
}
