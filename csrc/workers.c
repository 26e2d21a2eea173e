/* workers.c: the elastic pool of native worker threads.
 * Pure C: no Python API is called in this file and no PyObject is touched (a job's PyObject fields
 * are only carried along). The one call that may take the GIL is the hand-over of a finished job,
 * amongo_queue_push_from_worker, on the threadsafe wake-up path only (completion.c). A worker owns one mongoc_client_t for its life and runs one job at a time,
 * so the number of workers bounds the operations in flight. Workers are created on demand up to
 * max_workers and exit after AMONGO_IDLE_SECONDS without work.
 *
 * How many: every thread costs a wake-up and two context switches per operation, so a fast server is
 * served best by few threads going from job to job without sleeping (measured: 8 threads do 1.5x the
 * operations of 64 at 0.55x the CPU against the C bench server), and a slow one needs a thread per
 * operation in flight. So up to AMONGO_EAGER_WORKERS threads start as soon as every thread is busy;
 * beyond that, the spawner thread adds threads (a quarter more at a time) only while jobs wait
 * AMONGO_SPAWN_DELAY_US in the queue and each step raised the pool's throughput (hill climbing). */
#include "asyncmongo.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define AMONGO_IDLE_SECONDS 10
#define AMONGO_EAGER_WORKERS 4
#define AMONGO_SPAWN_DELAY_US 2000
#define AMONGO_RATE_MIN_JOBS 32
#define AMONGO_HOLD_US 200000
#define AMONGO_RTT_SERVERS 16 /* servers whose round trips are tracked (more are taken as 0) */
#define AMONGO_RTT_SAMPLES 10 /* the specification's window: the minimum of the last 10 */

/* What the core knows of a server's round trip time (Client Side Operations Timeout): libmongoc
 * 1.23 keeps only an average, updated by its monitors, and no count of samples. Each new value of
 * that average the core reads counts as a sample: the estimate is the lowest of the last
 * AMONGO_RTT_SAMPLES, and 0 until there are two (the specification's minimum RTT, which is 0
 * until two samples), so one slow first check cannot stop every operation short. */
typedef struct {
    uint32_t server_id;
    int count;                        /* values recorded, up to AMONGO_RTT_SAMPLES */
    int next;                         /* where the next one goes */
    int64_t values[AMONGO_RTT_SAMPLES];
} AmongoRtt;

struct AmongoPool {
    pthread_mutex_t mu;      /* protects every field below except mpool and max_workers */
    pthread_cond_t work_cv;  /* a job was queued, or the pool is stopping */
    pthread_cond_t exit_cv;  /* a worker exited */
    pthread_cond_t spawn_cv; /* the spawner has a job to watch, or the pool is stopping */
    AmongoJobList run;       /* the run queue */
    int queued;
    int workers;             /* threads that will still take jobs (spawn decisions) */
    int alive;               /* threads that still hold a libmongoc client (shutdown waits on it) */
    int sessions;            /* cursor sessions holding a libmongoc client (shutdown waits too) */
    int waiting;             /* threads blocked in work_cv */
    int starting;            /* threads created that have not yet looked at the queue */
    bool spawner;            /* the spawner thread runs */
    bool armed;              /* the spawner watches the queue's head */
    int64_t last_spawn_us;   /* when the spawner last started threads */
    uint64_t taken;          /* jobs taken by workers, ever (the spawner's throughput clock) */
    uint64_t taken_at_step;  /* taken when the spawner last started threads */
    double rate_before;      /* jobs/us in the window before the last step, 0 if unknown */
    int64_t hold_until_us;   /* growth did not pay: no more threads before then */
    bool stopping;
    AmongoJob *barrier;      /* finished by the last worker to exit after stop */
    AmongoWorkerCtx *idle_ctx; /* contexts of exited workers, for the next ones (asyncmongo.h) */
    atomic_long running;     /* jobs a worker is running now (stats; no lock) */
    AmongoRtt rtt[AMONGO_RTT_SERVERS]; /* round trips seen, by server (amongo_pool_rtt_nogil) */
    int max_workers;
    mongoc_client_pool_t *mpool;
    pthread_mutex_t unack_mu;       /* held while an unacknowledged write runs (amongo_pool_unack_*) */
    mongoc_client_t *unack_client;  /* their one libmongoc client, taken on first need; unack_mu */
};

AmongoPool *
amongo_pool_new(mongoc_client_pool_t *mpool, int max_workers)
{
    AmongoPool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->exit_cv, NULL);
    pthread_cond_init(&pool->spawn_cv, NULL);
    pthread_mutex_init(&pool->unack_mu, NULL);
    pool->max_workers = max_workers > 0 ? max_workers : 1;
    pool->mpool = mpool;
    return pool;
}

static _Thread_local AmongoWorkerCtx *current_ctx;

AmongoWorkerCtx *
amongo_worker_current_nogil(void)
{
    return current_ctx;
}

/* A context for a starting worker: an exited worker's, else a new one on a client of the pool.
 * Blocks only if the libmongoc pool is exhausted, which cannot happen: contexts <= its size. */
static AmongoWorkerCtx *
worker_ctx_take_nogil(AmongoPool *pool)
{
    pthread_mutex_lock(&pool->mu);
    AmongoWorkerCtx *ctx = pool->idle_ctx;
    if (ctx)
        pool->idle_ctx = ctx->next;
    pthread_mutex_unlock(&pool->mu);
    if (ctx)
        return ctx;
    ctx = calloc(1, sizeof *ctx);
    if (ctx) {
        ctx->client = mongoc_client_pool_pop(pool->mpool);
        if (ctx->client)
            amongo_stream_install_nogil(ctx->client);
    }
    return ctx;
}

static void
worker_ctx_leave_locked(AmongoPool *pool, AmongoWorkerCtx *ctx)
{
    ctx->next = pool->idle_ctx;
    pool->idle_ctx = ctx;
}

/* Only once amongo_pool_wait_stopped_nogil returned: give the contexts' clients back to libmongoc
 * (their sessions first), before libmongoc's pool is destroyed. */
void
amongo_pool_release_contexts_nogil(AmongoPool *pool)
{
    AmongoWorkerCtx *ctx = pool->idle_ctx;
    pool->idle_ctx = NULL;
    while (ctx) {
        AmongoWorkerCtx *next = ctx->next;
        if (ctx->txn_session)
            mongoc_client_session_destroy(ctx->txn_session);
        mongoc_client_pool_push(pool->mpool, ctx->client);
        free(ctx);
        ctx = next;
    }
    if (pool->unack_client) {
        mongoc_client_pool_push(pool->mpool, pool->unack_client);
        pool->unack_client = NULL;
    }
}

/* Only once amongo_pool_wait_stopped_nogil returned: no thread can touch the pool any more. */
void
amongo_pool_free(AmongoPool *pool)
{
    pthread_cond_destroy(&pool->spawn_cv);
    pthread_cond_destroy(&pool->exit_cv);
    pthread_cond_destroy(&pool->work_cv);
    pthread_mutex_destroy(&pool->unack_mu);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

static AmongoJob *
pool_pop_locked(AmongoPool *pool)
{
    AmongoJob *job = amongo_jobs_pop(&pool->run);
    if (job) {
        pool->queued--;
        pool->taken++;
    }
    return job;
}

/* ---- unacknowledged writes: one lane, in the order they were sent -------------------------------
 * A write with w:0 is done, for its caller, once it is written to a socket: the server answers
 * nothing and may not have applied it yet. Each worker has its own connection, and a server runs
 * the messages of two connections in no set order; so two unacknowledged writes awaited one after
 * the other (an upsert, then a delete of the same document) would otherwise reach the data in
 * either order. PyMongo and Motor keep that order in practice (a task's next operation takes the
 * connection its last one gave back); here every unacknowledged write outside a session goes
 * through one libmongoc client, one at a time, so the server reads them from one connection in the
 * order they were sent. Writes still being written when the next is submitted (not awaited) have
 * no order, as with PyMongo. */

/* Whether `job` is a write the server will not acknowledge: its write concern is the one in its
 * options (Python puts there any other than the client's), else the client's. */
static bool
job_unacknowledged_nogil(const AmongoJob *job, mongoc_client_t *client)
{
    if (job->session || (job->op != AMONGO_OP_WRITE && job->op != AMONGO_OP_READ_WRITE &&
                         job->op != AMONGO_OP_INSERT && job->op != AMONGO_OP_BULK))
        return false;
    bson_t opts;
    bson_iter_t it, wc;
    if (job->opts_len && bson_init_static(&opts, job->opts, job->opts_len) &&
        bson_iter_init_find(&it, &opts, "writeConcern") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &wc)) {
        bool w0 = false, journal = false;
        while (bson_iter_next(&wc)) {
            const char *key = bson_iter_key(&wc);
            if (strcmp(key, "w") == 0)
                w0 = BSON_ITER_HOLDS_NUMBER(&wc) && bson_iter_as_int64(&wc) == 0;
            else if (strcmp(key, "j") == 0)
                journal = bson_iter_as_bool(&wc);
        }
        return w0 && !journal;
    }
    return !mongoc_write_concern_is_acknowledged(mongoc_client_get_write_concern(client));
}

/* Enter the lane: the client to run the write with, until unack_leave. Should the libmongoc pool
 * have no client to spare for it (every one held by a cursor or a session), the worker's own:
 * the write is sent, only its order is not kept. */
static mongoc_client_t *
unack_enter_nogil(AmongoPool *pool, mongoc_client_t *own)
{
    pthread_mutex_lock(&pool->unack_mu);
    if (!pool->unack_client) {
        pool->unack_client = mongoc_client_pool_try_pop(pool->mpool);
        if (pool->unack_client)
            amongo_stream_install_nogil(pool->unack_client);
    }
    return pool->unack_client ? pool->unack_client : own;
}

static void
unack_leave_nogil(AmongoPool *pool)
{
    pthread_mutex_unlock(&pool->unack_mu);
}

/* Run `job`, then the jobs of its session that waited for it, in their order, on this worker (so a
 * session's jobs never overlap or overtake each other); those left when the pool stops fail as
 * closed. The next job is taken before the finished one is handed to its loop, which may free the
 * session. */
static void
worker_run_nogil(AmongoPool *pool, AmongoJob *job, mongoc_client_t *client)
{
    bool run = true;
    while (job) {
        atomic_fetch_add_explicit(&pool->running, 1, memory_order_relaxed);
        if (!run)
            amongo_job_set_closed(job);
        else if (!amongo_job_expired(job)) { /* a job whose deadline passed in the queue: unsent */
            amongo_stream_set_deadline_nogil(job->deadline_us); /* its socket waits end there */
            if (job_unacknowledged_nogil(job, client)) {
                amongo_job_run_nogil(job, unack_enter_nogil(pool, client));
                unack_leave_nogil(pool);
            } else {
                amongo_job_run_nogil(job, client);
            }
            amongo_stream_set_deadline_nogil(0);
        }
        AmongoJob *next = job->session ? amongo_session_turn_done(job->session) : NULL;
        atomic_fetch_sub_explicit(&pool->running, 1, memory_order_relaxed);
        amongo_queue_push_from_worker(job->queue, job);
        if (next) {
            pthread_mutex_lock(&pool->mu);
            run = !pool->stopping;
            pthread_mutex_unlock(&pool->mu);
        }
        job = next;
    }
}

static void *
worker_main_nogil(void *arg)
{
    AmongoPool *pool = arg;
    pthread_setname_np(pthread_self(), "asyncmongo-io"); /* as top, ps and profilers show it */
    AmongoWorkerCtx *ctx = worker_ctx_take_nogil(pool);
    mongoc_client_t *client = ctx ? ctx->client : NULL;
    current_ctx = ctx;
    bool started = false;

    while (ctx) { /* no context (out of memory): leave at once */
        pthread_mutex_lock(&pool->mu);
        if (!started) {
            started = true;
            pool->starting--;
        }
        AmongoJob *job = NULL;
        while (!pool->stopping && !(job = pool_pop_locked(pool))) {
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += AMONGO_IDLE_SECONDS;
            pool->waiting++;
            int rc = pthread_cond_timedwait(&pool->work_cv, &pool->mu, &deadline);
            pool->waiting--;
            if (rc == ETIMEDOUT && !pool->run.head)
                break;
        }
        if (!job) {
            /* Leave the accepting set under the same lock hold that saw the queue empty, so a submit
             * racing with this exit spawns a new worker instead of counting on this one. */
            pool->workers--;
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        pthread_mutex_unlock(&pool->mu);
        worker_run_nogil(pool, job, client);
    }

    /* Leave the context for the next worker before saying we are gone: the pool is destroyed
     * after the last exit, and gives the contexts' clients back to libmongoc then. */
    current_ctx = NULL;
    pthread_mutex_lock(&pool->mu);
    if (ctx) {
        worker_ctx_leave_locked(pool, ctx);
    } else {
        pool->starting--;
        pool->workers--;
    }
    pool->alive--;
    AmongoJob *barrier = NULL;
    if (pool->alive == 0 && pool->stopping) {
        barrier = pool->barrier;
        pool->barrier = NULL;
    }
    pthread_cond_broadcast(&pool->exit_cv);
    pthread_mutex_unlock(&pool->mu);
    atomic_fetch_sub(&amongo_counters.workers_live, 1);
    /* The pool may be freed from here on; the barrier's queue outlives it (the job holds it). */
    if (barrier)
        amongo_queue_push_from_worker(barrier->queue, barrier);
    return NULL;
}

/* A detached thread running fn(pool) on a stack of `stack` bytes; pthread_create's result. */
static int
start_detached(void *(*fn)(void *), AmongoPool *pool, size_t stack)
{
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, stack);
    int rc = pthread_create(&tid, &attr, fn, pool);
    pthread_attr_destroy(&attr);
    return rc;
}

/* The absolute CLOCK_REALTIME time `us` microseconds from now (condition variables' clock). */
static struct timespec
deadline_in(int64_t us)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    int64_t ns = deadline.tv_nsec + us * 1000;
    deadline.tv_sec += ns / 1000000000;
    deadline.tv_nsec = ns % 1000000000;
    return deadline;
}

static int
pool_spawn(AmongoPool *pool)
{
    /* libmongoc's deepest stacks (SCRAM, TLS) stay far below 256 KiB; 8 MiB per idle thread is waste. */
    int rc = start_detached(worker_main_nogil, pool, 512 * 1024);
    if (rc == 0) {
        atomic_fetch_add(&amongo_counters.workers_live, 1);
        atomic_fetch_add(&amongo_counters.workers_started, 1);
    }
    return rc;
}

/* The spawner: sleeps until armed, then until the queue's head has waited AMONGO_SPAWN_DELAY_US;
 * if it is still queued with every thread busy, starts a quarter more threads (up to max_workers),
 * unless the last step did not raise throughput. It exits when the pool stops, or after
 * AMONGO_IDLE_SECONDS unarmed. */
static void *
spawner_main_nogil(void *arg)
{
    AmongoPool *pool = arg;
    pthread_setname_np(pthread_self(), "asyncmongo-grow");
    pthread_mutex_lock(&pool->mu);
    while (!pool->stopping) {
        if (!pool->armed) {
            struct timespec deadline = deadline_in((int64_t)AMONGO_IDLE_SECONDS * 1000000);
            if (pthread_cond_timedwait(&pool->spawn_cv, &pool->mu, &deadline) == ETIMEDOUT &&
                !pool->armed)
                break;
            continue;
        }
        AmongoJob *head = pool->run.head;
        int backlog = pool->queued - pool->waiting - pool->starting;
        if (!head || backlog <= 0 || pool->workers >= pool->max_workers) {
            pool->armed = false;
            continue;
        }
        /* The head must have waited the delay, and so must the threads started last: growth
         * is by a quarter at a time, each step given the time to show its effect. */
        int64_t due = head->queued_at_us + AMONGO_SPAWN_DELAY_US;
        if (pool->last_spawn_us + AMONGO_SPAWN_DELAY_US > due)
            due = pool->last_spawn_us + AMONGO_SPAWN_DELAY_US;
        int64_t wait_us = due - bson_get_monotonic_time();
        if (wait_us > 0) {
            struct timespec deadline = deadline_in(wait_us);
            pthread_cond_timedwait(&pool->spawn_cv, &pool->mu, &deadline);
            continue;
        }
        /* Hill climbing: threads are added while they raise throughput. A window with many jobs
         * done measures it; if the last step did not raise it by a tenth, the bottleneck is the
         * CPU or the server, not waiting threads: hold, then probe again. A window with few jobs
         * done means slow operations, and more threads is the answer. */
        int64_t now = bson_get_monotonic_time();
        if (now < pool->hold_until_us) {
            struct timespec deadline = deadline_in(pool->hold_until_us - now);
            pthread_cond_timedwait(&pool->spawn_cv, &pool->mu, &deadline);
            continue;
        }
        uint64_t done = pool->taken - pool->taken_at_step;
        if (pool->last_spawn_us && done >= AMONGO_RATE_MIN_JOBS) {
            double rate = (double)done / (double)(now - pool->last_spawn_us);
            if (pool->rate_before > 0 && rate < pool->rate_before * 1.1) {
                pool->hold_until_us = now + AMONGO_HOLD_US;
                pool->rate_before = 0;
                pool->last_spawn_us = now;
                pool->taken_at_step = pool->taken;
                continue;
            }
            pool->rate_before = rate;
        } else {
            pool->rate_before = 0;
        }
        pool->taken_at_step = pool->taken;
        int n = pool->workers / 4 > 1 ? pool->workers / 4 : 1;
        if (n > backlog)
            n = backlog;
        if (n > pool->max_workers - pool->workers)
            n = pool->max_workers - pool->workers;
        pool->last_spawn_us = bson_get_monotonic_time();
        pool->workers += n;
        pool->alive += n;
        pool->starting += n;
        /* stays armed: the next round looks again once the new threads have had their chance */
        pthread_mutex_unlock(&pool->mu);
        int failed = 0;
        for (int i = 0; i < n; i++)
            failed += pool_spawn(pool) != 0;
        pthread_mutex_lock(&pool->mu);
        pool->workers -= failed;
        pool->alive -= failed;
        pool->starting -= failed;
    }
    pool->spawner = false;
    pool->armed = false;
    pthread_cond_broadcast(&pool->exit_cv);
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

static int
spawner_start(AmongoPool *pool)
{
    return start_detached(spawner_main_nogil, pool, 64 * 1024);
}

/* Called on the loop thread with the GIL held; the mutex is only ever held briefly by threads that
 * never wait for the GIL, so holding the GIL here cannot deadlock. */
int
amongo_pool_submit(AmongoPool *pool, AmongoJob *job)
{
    pthread_mutex_lock(&pool->mu);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->mu);
        return -1;
    }
    amongo_jobs_append(&pool->run, job);
    pool->queued++;
    job->queued_at_us = bson_get_monotonic_time();
    /* Every thread busy (none waiting or about to look): start one now while there are few, else
     * let the spawner start threads if the job waits long (see the top of this file). */
    bool need = pool->queued > pool->waiting + pool->starting && pool->workers < pool->max_workers;
    bool spawn = need && pool->workers < AMONGO_EAGER_WORKERS;
    bool start_spawner = false;
    if (need && !spawn && !pool->armed) {
        pool->armed = true;
        if (pool->spawner)
            pthread_cond_signal(&pool->spawn_cv);
        else
            start_spawner = pool->spawner = true;
    }
    if (spawn) {
        pool->workers++;
        pool->alive++;
        pool->starting++;
    }
    if (pool->waiting)
        pthread_cond_signal(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);

    if (start_spawner && spawner_start(pool) != 0) {
        /* No spawner: start a worker now instead, as if there were few. */
        pthread_mutex_lock(&pool->mu);
        pool->spawner = pool->armed = false;
        spawn = pool->workers < pool->max_workers;
        if (spawn) {
            pool->workers++;
            pool->alive++;
            pool->starting++;
        }
        pthread_mutex_unlock(&pool->mu);
    }
    if (spawn && pool_spawn(pool) != 0) {
        pthread_mutex_lock(&pool->mu);
        pool->workers--;
        pool->alive--;
        pool->starting--;
        if (pool->workers == 0) {
            /* No thread will ever run it: take it back (it is still queued, nobody could pop it). */
            if (amongo_jobs_take(&pool->run, NULL, job)) {
                pool->queued--;
                pthread_mutex_unlock(&pool->mu);
                return -2;
            }
        }
        pthread_mutex_unlock(&pool->mu);
    }
    return 0;
}

/* Remove the queued job whose future is `future`, if no worker has taken it yet. */
AmongoJob *
amongo_pool_take_queued(AmongoPool *pool, PyObject *future)
{
    pthread_mutex_lock(&pool->mu);
    AmongoJob *job = amongo_jobs_take(&pool->run, future, NULL);
    if (job)
        pool->queued--;
    pthread_mutex_unlock(&pool->mu);
    return job;
}

/* Stop taking jobs; return the queued ones (a list through ->next) for the caller to fail. The
 * barrier is finished by the last worker to exit; if none is alive, *barrier_queued is false and the
 * caller finishes it itself. */
AmongoJob *
amongo_pool_stop(AmongoPool *pool, AmongoJob *barrier, bool *barrier_queued)
{
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    AmongoJob *queued = amongo_jobs_take_all(&pool->run);
    pool->queued = 0;
    *barrier_queued = barrier && pool->alive > 0;
    if (*barrier_queued)
        pool->barrier = barrier;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_cond_broadcast(&pool->spawn_cv);
    pthread_mutex_unlock(&pool->mu);
    return queued;
}

void
amongo_pool_wait_stopped_nogil(AmongoPool *pool)
{
    pthread_mutex_lock(&pool->mu);
    while (pool->alive > 0 || pool->sessions > 0 || pool->spawner)
        pthread_cond_wait(&pool->exit_cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}

int
amongo_pool_workers(AmongoPool *pool)
{
    pthread_mutex_lock(&pool->mu);
    int n = pool->workers;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

int
amongo_pool_queued(AmongoPool *pool)
{
    pthread_mutex_lock(&pool->mu);
    int n = pool->queued;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

int64_t
amongo_pool_rtt_nogil(AmongoPool *pool, uint32_t server_id, int64_t average_ms)
{
    if (!pool || !server_id || average_ms < 0)
        return 0;
    pthread_mutex_lock(&pool->mu);
    AmongoRtt *r = NULL;
    for (int i = 0; i < AMONGO_RTT_SERVERS && !r; i++)
        if (pool->rtt[i].server_id == server_id || !pool->rtt[i].server_id)
            r = &pool->rtt[i];
    int64_t rtt = 0;
    if (r) {
        r->server_id = server_id;
        int last = (r->next + AMONGO_RTT_SAMPLES - 1) % AMONGO_RTT_SAMPLES;
        if (!r->count || r->values[last] != average_ms) { /* a new value: the monitor sampled */
            r->values[r->next] = average_ms;
            r->next = (r->next + 1) % AMONGO_RTT_SAMPLES;
            if (r->count < AMONGO_RTT_SAMPLES)
                r->count++;
        }
        if (r->count >= 2) {
            rtt = r->values[0];
            for (int i = 1; i < r->count; i++)
                if (r->values[i] < rtt)
                    rtt = r->values[i];
        }
    }
    pthread_mutex_unlock(&pool->mu);
    return rtt;
}

int
amongo_pool_sessions(AmongoPool *pool)
{
    pthread_mutex_lock(&pool->mu);
    int n = pool->sessions;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

void
amongo_pool_activity(AmongoPool *pool, int *busy, long *running)
{
    pthread_mutex_lock(&pool->mu);
    *busy = pool->workers - pool->waiting - pool->starting;
    pthread_mutex_unlock(&pool->mu);
    *running = atomic_load_explicit(&pool->running, memory_order_relaxed);
}

void
amongo_pool_session_opened(AmongoPool *pool)
{
    pthread_mutex_lock(&pool->mu);
    pool->sessions++;
    pthread_mutex_unlock(&pool->mu);
}

void
amongo_pool_session_closed(AmongoPool *pool)
{
    pthread_mutex_lock(&pool->mu);
    pool->sessions--;
    pthread_cond_broadcast(&pool->exit_cv);
    pthread_mutex_unlock(&pool->mu);
}
