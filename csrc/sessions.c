/* sessions.c: the explicit session a server cursor keeps for its getMores (see asyncmongo.h).
 * Opening and releasing run on workers (pure C); the capsule's destructor releases a session the
 * cursor never finished, on the loop thread, which is safe: no job holds the capsule then, and
 * ending a session outside a transaction does no I/O. */
#include "asyncmongo.h"

#define CAPSULE_NAME "asyncmongo.cursor_session"

/* A session on a client of its own, or NULL (the pool is exhausted, or the server has no sessions):
 * the cursor then falls back to libmongoc's implicit sessions, as before. */
AmongoCursorSession *
amongo_session_open_nogil(AmongoJob *job)
{
    mongoc_client_t *client = mongoc_client_pool_try_pop(job->mpool);
    if (!client)
        return NULL;
    mongoc_session_opt_t *opts = mongoc_session_opts_new();
    mongoc_session_opts_set_causal_consistency(opts, false); /* an implicit session's behaviour */
    bson_error_t error;
    mongoc_client_session_t *cs = mongoc_client_start_session(client, opts, &error);
    mongoc_session_opts_destroy(opts);
    AmongoCursorSession *s = cs ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        if (cs)
            mongoc_client_session_destroy(cs);
        mongoc_client_pool_push(job->mpool, client);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->client = client;
    s->cs = cs;
    s->mpool = job->mpool;
    s->pool = job->pool;
    s->fork_generation = atomic_load(&amongo_fork_generation);
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

static void
session_capsule_destructor(PyObject *capsule)
{
    AmongoCursorSession *s = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (!s)
        return;
    if (s->fork_generation == atomic_load(&amongo_fork_generation))
        amongo_session_release_nogil(s); /* the parent's pool must not be touched after fork */
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
