/* sessions.c: explicit sessions: the one a server cursor keeps for its getMores (see asyncmongo.h)
 * and the user's (start_session), each on a libmongoc client of its own.
 * Opening and releasing run on workers (pure C); the capsule's destructor releases a session the
 * cursor never finished, on the loop thread, which is safe: no job holds the capsule then, and
 * ending a session outside a transaction does no I/O. */
#include "asyncmongo.h"

#define CAPSULE_NAME "asyncmongo.cursor_session"

/* A session on a client of its own, or NULL with `error` set (the pool is exhausted, or the
 * server has no sessions). `opts` NULL: a cursor's session, with an implicit session's behaviour
 * (the cursor then falls back to implicit sessions); else the user's options
 * {causalConsistency: bool, snapshot: bool}. */
AmongoCursorSession *
amongo_session_open_nogil(AmongoJob *job, const bson_t *opts, bson_error_t *error)
{
    mongoc_client_t *client = mongoc_client_pool_try_pop(job->mpool);
    if (!client) {
        bson_set_error(error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                       "no free libmongoc client for a session: every one of the pool's clients is "
                       "held by a worker, an open cursor or a session (raise maxPoolSize)");
        return NULL;
    }
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
    AmongoCursorSession *s = cs ? calloc(1, sizeof *s) : NULL;
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

/* Give the session's server session and client back (mu held, or no other user possible). */
void
amongo_session_release_nogil(AmongoCursorSession *s)
{
    if (!s->client)
        return;
    mongoc_client_session_destroy(s->cs);
    mongoc_client_pool_push(s->mpool, s->client);
    s->cs = NULL;
    s->client = NULL;
    amongo_pool_session_closed(s->pool);
}

static void *
session_release_thread_nogil(void *arg)
{
    AmongoCursorSession *s = arg;
    amongo_session_release_nogil(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
}

static void
session_capsule_destructor(PyObject *capsule)
{
    AmongoCursorSession *s = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (!s)
        return;
    if (s->fork_generation != atomic_load(&amongo_fork_generation)) {
        /* the parent's pool must not be touched after fork */
    } else if (s->client && mongoc_client_session_in_transaction(s->cs)) {
        /* A session dropped inside a transaction: destroying it aborts the transaction, network
         * I/O the loop thread must not wait for. A detached thread does it; the pool waits for
         * its sessions before it is destroyed. */
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, session_release_thread_nogil, s);
        pthread_attr_destroy(&attr);
        if (rc == 0)
            return;
        amongo_session_release_nogil(s);
    } else {
        amongo_session_release_nogil(s);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

PyObject *
amongo_session_capsule(AmongoCursorSession *s)
{
    PyObject *capsule = PyCapsule_New(s, CAPSULE_NAME, session_capsule_destructor);
    if (!capsule) {
        amongo_session_release_nogil(s);
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
    return capsule;
}

AmongoCursorSession *
amongo_session_from_capsule(PyObject *capsule)
{
    return PyCapsule_GetPointer(capsule, CAPSULE_NAME);
}
