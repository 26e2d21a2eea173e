/* sessions.c: explicit sessions: the one a server cursor keeps for its getMores (see asyncmongo.h)
 * and the user's (start_session), each on a libmongoc client of its own, and the jobs of a session's
 * life (start, transactions, end).
 * Opening and the session jobs run on workers (pure C); the capsule's destructor releases a session
 * the cursor never finished, on the loop thread, which is safe: no job holds the capsule then, and
 * ending a session outside a transaction does no I/O (inside one, a detached thread does it). */
#include "asyncmongo.h"

#define CAPSULE_NAME "asyncmongo.cursor_session"

/* A session on a client of its own, or NULL with `error` set (the pool is exhausted, or the
 * server has no sessions). `opts` NULL: a cursor's session, with an implicit session's behaviour
 * (the cursor then falls back to implicit sessions); else the user's options
 * {causalConsistency: bool, snapshot: bool}. */
AmongoSession *
amongo_session_open_nogil(AmongoJob *job, const bson_t *opts, bson_error_t *error)
{
    mongoc_client_t *client = mongoc_client_pool_try_pop(job->mpool);
    if (!client) {
        bson_set_error(error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                       "no free libmongoc client for a session: every one of the pool's clients is "
                       "held by a worker, an open cursor or a session (raise maxPoolSize)");
        return NULL;
    }
    amongo_stream_install_nogil(client);
    mongoc_session_opt_t *sopts = mongoc_session_opts_new();
    bool causal = false, snapshot = false;
    bson_iter_t it;
    if (opts && bson_iter_init_find(&it, opts, "causalConsistency"))
        causal = bson_iter_as_bool(&it);
    if (opts && bson_iter_init_find(&it, opts, "snapshot"))
        snapshot = bson_iter_as_bool(&it);
    mongoc_session_opts_set_causal_consistency(sopts, causal);
    if (snapshot)
        mongoc_session_opts_set_snapshot(sopts, true);
    mongoc_client_session_t *cs = mongoc_client_start_session(client, sopts, error);
    mongoc_session_opts_destroy(sopts);
    AmongoSession *s = cs ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        if (cs) {
            mongoc_client_session_destroy(cs);
            bson_set_error(error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                           "out of memory");
        }
        mongoc_client_pool_push(job->mpool, client);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->client = client;
    s->cs = cs;
    s->mpool = job->mpool;
    s->pool = job->pool;
    s->fork_generation = atomic_load(&amongo_fork_generation);
    s->user = opts != NULL;
    amongo_pool_session_opened(job->pool);
    return s;
}

/* Pure C, any thread: give the session's server session and client back (in the session's turn,
 * or with no other user possible). Outside a transaction it does no I/O. */
void
amongo_session_release(AmongoSession *s)
{
    if (!s->client)
        return;
    mongoc_client_session_destroy(s->cs);
    mongoc_client_pool_push(s->mpool, s->client);
    s->cs = NULL;
    s->client = NULL;
    amongo_pool_session_closed(s->pool);
}

/* Pure C, any thread: release the session, then free it (nobody may use it any more). */
void
amongo_session_free(AmongoSession *s)
{
    amongo_session_release(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void *
session_free_thread_nogil(void *arg)
{
    amongo_session_free(arg);
    return NULL;
}

static void
session_capsule_destructor(PyObject *capsule)
{
    AmongoSession *s = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (!s)
        return;
    if (s->fork_generation != atomic_load(&amongo_fork_generation))
        return; /* the parent's pool must not be touched after fork: leak it */
    if (s->client && mongoc_client_session_in_transaction(s->cs)) {
        /* A session dropped inside a transaction: destroying it aborts the transaction, network
         * I/O the loop thread must not wait for. A detached thread does it; the pool waits for
         * its sessions before it is destroyed. */
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, session_free_thread_nogil, s);
        pthread_attr_destroy(&attr);
        if (rc == 0)
            return;
    }
    amongo_session_free(s);
}

PyObject *
amongo_session_capsule(AmongoSession *s)
{
    PyObject *capsule = PyCapsule_New(s, CAPSULE_NAME, session_capsule_destructor);
    if (!capsule)
        amongo_session_free(s);
    return capsule;
}

AmongoSession *
amongo_session_from_capsule(PyObject *capsule)
{
    return PyCapsule_GetPointer(capsule, CAPSULE_NAME);
}

/* ---- the session's turn: its jobs run one at a time, in submission order ------------------- */

/* Pure C, any thread (submit, on the loop thread). False: the job has the turn now and goes to
 * the pool; true: another job of the session is queued or running, and this one waits for it. */
bool
amongo_session_enqueue(AmongoSession *s, AmongoJob *job)
{
    pthread_mutex_lock(&s->mu);
    bool wait = s->busy;
    if (wait)
        amongo_jobs_append(&s->waiting, job);
    s->busy = true;
    pthread_mutex_unlock(&s->mu);
    return wait;
}

/* Pure C, any thread: the job that had the turn is done (run, or taken out of the pool's queue).
 * Returns the next job, which has the turn now (its caller runs or queues it), or NULL: the
 * session is idle. Call it before the finished job is handed to its loop: that may free the
 * session. */
AmongoJob *
amongo_session_turn_done(AmongoSession *s)
{
    pthread_mutex_lock(&s->mu);
    AmongoJob *next = amongo_jobs_pop(&s->waiting);
    if (!next)
        s->busy = false;
    pthread_mutex_unlock(&s->mu);
    return next;
}

/* Pure C, any thread: take the waiting job of `future` out of the session's queue (cancelled:
 * it is never sent), or NULL if it is not waiting there. */
AmongoJob *
amongo_session_take_waiting(AmongoSession *s, PyObject *future)
{
    pthread_mutex_lock(&s->mu);
    AmongoJob *job = amongo_jobs_take(&s->waiting, future, NULL);
    pthread_mutex_unlock(&s->mu);
    return job;
}

/* ---- the jobs of a session's life (workers, no GIL) ---------------------------------------- */

/* Transaction options {readConcern: {level}, writeConcern: {w, j, wtimeout},
 * readPreference: {mode, ...}, maxCommitTimeMS} -> mongoc_transaction_opt_t (caller frees). */
static mongoc_transaction_opt_t *
session_transaction_opts_nogil(const bson_t *opts)
{
    mongoc_transaction_opt_t *topts = mongoc_transaction_opts_new();
    bson_iter_t it, f;
    if (bson_iter_init_find(&it, opts, "readConcern") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &f) && bson_iter_find(&f, "level") && BSON_ITER_HOLDS_UTF8(&f)) {
        mongoc_read_concern_t *rc = mongoc_read_concern_new();
        mongoc_read_concern_set_level(rc, bson_iter_utf8(&f, NULL));
        mongoc_transaction_opts_set_read_concern(topts, rc);
        mongoc_read_concern_destroy(rc);
    }
    if (bson_iter_init_find(&it, opts, "writeConcern") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &f)) {
        mongoc_write_concern_t *wc = mongoc_write_concern_new();
        while (bson_iter_next(&f)) {
            const char *key = bson_iter_key(&f);
            if (!strcmp(key, "w") && BSON_ITER_HOLDS_UTF8(&f))
                mongoc_write_concern_set_wtag(wc, bson_iter_utf8(&f, NULL));
            else if (!strcmp(key, "w"))
                mongoc_write_concern_set_w(wc, (int32_t)bson_iter_as_int64(&f));
            else if (!strcmp(key, "j"))
                mongoc_write_concern_set_journal(wc, bson_iter_as_bool(&f));
            else if (!strcmp(key, "wtimeout"))
                mongoc_write_concern_set_wtimeout_int64(wc, bson_iter_as_int64(&f));
        }
        mongoc_transaction_opts_set_write_concern(topts, wc);
        mongoc_write_concern_destroy(wc);
    }
    if (bson_iter_init_find(&it, opts, "readPreference") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_t doc;
        bson_iter_document(&it, &len, &data);
        mongoc_read_prefs_t *prefs =
            bson_init_static(&doc, data, len) ? amongo_read_prefs_nogil(&doc) : NULL;
        if (prefs) {
            mongoc_transaction_opts_set_read_prefs(topts, prefs);
            mongoc_read_prefs_destroy(prefs);
        }
    }
    if (bson_iter_init_find(&it, opts, "maxCommitTimeMS"))
        mongoc_transaction_opts_set_max_commit_time_ms(topts, bson_iter_as_int64(&it));
    return topts;
}

static bool session_act_in_turn_nogil(AmongoJob *job, AmongoSession *s, const bson_t *opts);

/* libmongoc retries a commit or an abort once after a retryable (network) error. Under a deadline
 * that retry comes after the timeout at the deadline and needs a new connection, whose refusal
 * (stream.c) would make libmongoc mark the server unknown and clear its pool: the retry is
 * turned off for the call, through the session client's own copy of the URI (libmongoc's pooled
 * clients copy it; this thread alone uses the client in the session's turn). Returns whether it
 * was on. */
static bool
session_retry_off_nogil(AmongoJob *job, AmongoSession *s)
{
    if (!job->deadline_us || (job->op != AMONGO_OP_TXN_COMMIT && job->op != AMONGO_OP_TXN_ABORT))
        return false;
    mongoc_uri_t *uri = (mongoc_uri_t *)mongoc_client_get_uri(s->client);
    if (!mongoc_uri_get_option_as_bool(uri, MONGOC_URI_RETRYWRITES, true))
        return false;
    mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYWRITES, false);
    return true;
}

/* One action on an open session (s->client set; its turn, see amongo_session_enqueue). The reply
 * is initialised on return. */
static bool
session_act_nogil(AmongoJob *job, AmongoSession *s, const bson_t *opts)
{
    bool retry_was_on = session_retry_off_nogil(job, s);
    mongoc_client_t *client = s->client;
    bool ok = session_act_in_turn_nogil(job, s, opts);
    if (retry_was_on) /* the client is still the session's: an ending session frees it after */
        mongoc_uri_set_option_as_bool((mongoc_uri_t *)mongoc_client_get_uri(client),
                                      MONGOC_URI_RETRYWRITES, true);
    return ok;
}

static bool
session_act_in_turn_nogil(AmongoJob *job, AmongoSession *s, const bson_t *opts)
{
    switch (job->op) {
    case AMONGO_OP_TXN_COMMIT:
        return mongoc_client_session_commit_transaction(s->cs, &job->reply, &job->error);
    case AMONGO_OP_TXN_START: {
        bson_init(&job->reply);
        mongoc_transaction_opt_t *topts = session_transaction_opts_nogil(opts);
        bool ok = mongoc_client_session_start_transaction(s->cs, topts, &job->error);
        mongoc_transaction_opts_destroy(topts);
        return ok;
    }
    case AMONGO_OP_TXN_ABORT:
        bson_init(&job->reply);
        return mongoc_client_session_abort_transaction(s->cs, &job->error);
    default: /* AMONGO_OP_SESSION_END: aborts an open transaction */
        bson_init(&job->reply);
        amongo_session_release(s);
        return true;
    }
}

/* AMONGO_OP_SESSION_START opens a session (its capsule is the result); the other session
 * operations act on job->session, in its turn. Ending twice is harmless; anything else on an
 * ended session fails. */
void
amongo_job_run_session_nogil(AmongoJob *job)
{
    bson_t opts;
    if (!bson_init_static(&opts, job->cmd, job->cmd_len)) {
        bson_init(&job->reply);
        bson_set_error(&job->error, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
                       "invalid session options");
    } else if (job->op == AMONGO_OP_SESSION_START) {
        bson_init(&job->reply);
        job->out_session = amongo_session_open_nogil(job, &opts, &job->error);
        job->ok = job->out_session != NULL;
    } else if (!job->session) {
        bson_init(&job->reply);
        bson_set_error(&job->error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                       "no session given");
    } else {
        AmongoSession *s = job->session;
        if (s->client) {
            job->ok = session_act_nogil(job, s, &opts);
        } else {
            bson_init(&job->reply);
            job->ok = job->op == AMONGO_OP_SESSION_END;
            if (!job->ok)
                bson_set_error(&job->error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                               "the session has ended");
        }
    }
    amongo_job_keep_reply_nogil(job);
}
