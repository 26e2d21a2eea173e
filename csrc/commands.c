/* commands.c: running one command job on a worker (AMONGO_OP_COMMAND .. AMONGO_OP_READ_WRITE).
 * Pure C, no GIL: the steps are named (session enter/leave, server selection, options, dispatch)
 * and share one cleanup path; the result is left in the job for the loop thread. */
#include "asyncmongo.h"

#include <inttypes.h>

/* Everything one command run takes and must give back. */
typedef struct {
    bson_t cmd;                    /* over job->cmd: no copy */
    bson_t timed_cmd;              /* cmd with maxTimeMS / txnNumber (AMONGO_FLAG_MAX_TIME ...) */
    bool timed_built;
    bson_t opts_in;                /* over job->opts, or empty */
    bson_t opts;                   /* what is sent: opts_in plus serverId and the session */
    bool opts_built;
    mongoc_read_prefs_t *prefs;    /* the operation's read preference, or NULL */
    mongoc_client_t *client;       /* the worker's, or the session's */
    mongoc_client_session_t *cs;   /* the session the command runs in, or NULL (implicit) */
    AmongoSession *opened;         /* a cursor's session opened by this job (AMONGO_FLAG_PIN) */
    bool in_txn;                   /* inside the user's transaction: its concerns rule */
    bool write_on_secondary;       /* $out/$merge sent as a read to a non-primary server */
    uint32_t server_id;
} CommandRun;

/* {mode: "secondary", tags: [...], maxStalenessSeconds: n} -> mongoc_read_prefs_t, or NULL. */
mongoc_read_prefs_t *
amongo_read_prefs_nogil(const bson_t *doc)
{
    static const struct {
        const char *name;
        mongoc_read_mode_t mode;
    } modes[] = {{"primary", MONGOC_READ_PRIMARY},
                 {"primaryPreferred", MONGOC_READ_PRIMARY_PREFERRED},
                 {"secondary", MONGOC_READ_SECONDARY},
                 {"secondaryPreferred", MONGOC_READ_SECONDARY_PREFERRED},
                 {"nearest", MONGOC_READ_NEAREST}};
    bson_iter_t f;
    if (!bson_iter_init(&f, doc))
        return NULL;
    mongoc_read_prefs_t *prefs = mongoc_read_prefs_new(MONGOC_READ_PRIMARY);
    while (bson_iter_next(&f)) {
        const char *key = bson_iter_key(&f);
        if (!strcmp(key, "mode") && BSON_ITER_HOLDS_UTF8(&f)) {
            const char *mode = bson_iter_utf8(&f, NULL);
            for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
                if (!strcmp(mode, modes[i].name))
                    mongoc_read_prefs_set_mode(prefs, modes[i].mode);
        } else if (!strcmp(key, "tags") && BSON_ITER_HOLDS_ARRAY(&f)) {
            uint32_t len;
            const uint8_t *data;
            bson_t tags;
            bson_iter_array(&f, &len, &data);
            if (bson_init_static(&tags, data, len))
                mongoc_read_prefs_set_tags(prefs, &tags);
        } else if (!strcmp(key, "maxStalenessSeconds")) {
            mongoc_read_prefs_set_max_staleness_seconds(prefs, bson_iter_as_int64(&f));
        }
    }
    return prefs;
}

/* Find cursor.{firstBatch,nextBatch} and cursor.id in a command reply. For AMONGO_RES_FIRST keep a
 * pointer to the first document; for the cursor kinds copy the documents end to end, so that the
 * loop thread decodes the whole batch with one call. */
static void
command_extract_batch_nogil(AmongoJob *job)
{
    bson_iter_t it, cursor, batch;
    if (!bson_iter_init_find(&it, &job->reply, "cursor") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !bson_iter_recurse(&it, &cursor)) {
        job->ok = false;
        bson_set_error(&job->error, MONGOC_ERROR_PROTOCOL, MONGOC_ERROR_PROTOCOL_INVALID_REPLY,
                       "the server's reply has no cursor document");
        return;
    }
    bool have_batch = false;
    while (bson_iter_next(&cursor)) {
        const char *key = bson_iter_key(&cursor);
        if (!strcmp(key, "id")) {
            job->cursor_id = bson_iter_as_int64(&cursor);
        } else if ((!strcmp(key, "firstBatch") || !strcmp(key, "nextBatch")) &&
                   BSON_ITER_HOLDS_ARRAY(&cursor)) {
            batch = cursor;
            have_batch = true;
        }
    }
    bson_iter_t doc;
    if (!have_batch || !bson_iter_recurse(&batch, &doc))
        return;
    uint32_t len;
    const uint8_t *data;
    if (job->result_kind == AMONGO_RES_FIRST) {
        while (bson_iter_next(&doc)) {
            if (BSON_ITER_HOLDS_DOCUMENT(&doc)) {
                bson_iter_document(&doc, &len, &job->first);
                return;
            }
        }
        return;
    }
    size_t total = 0;
    bson_iter_t count = doc;
    while (bson_iter_next(&count)) {
        if (BSON_ITER_HOLDS_DOCUMENT(&count)) {
            bson_iter_document(&count, &len, &data);
            total += len;
        }
    }
    if (!total)
        return;
    job->batch = bson_malloc(total);
    while (bson_iter_next(&doc)) {
        if (BSON_ITER_HOLDS_DOCUMENT(&doc)) {
            bson_iter_document(&doc, &len, &data);
            memcpy(job->batch + job->batch_len, data, len);
            job->batch_len += len;
        }
    }
}

/* Parse the job's inputs; choose the client and session it runs with: a cursor's getMores and
 * killCursors run in the session that opened it, and a cursor-opening job opens one. Whatever it
 * returns, command_leave_nogil gives back what it took. */
static bool
command_enter_nogil(AmongoJob *job, mongoc_client_t *client, CommandRun *run)
{
    memset(run, 0, sizeof *run);
    run->client = client;
    if (job->opts_len)
        bson_init_static(&run->opts_in, job->opts, job->opts_len);
    else
        bson_init(&run->opts_in);
    if (job->read_prefs_len) {
        bson_t doc;
        if (bson_init_static(&doc, job->read_prefs, job->read_prefs_len))
            run->prefs = amongo_read_prefs_nogil(&doc);
    }
    if (job->session) {
        if (job->session->client) {
            run->client = job->session->client;
            run->cs = job->session->cs;
        }
    } else if ((job->flags & AMONGO_FLAG_PIN) && job->mpool) {
        bson_error_t unused; /* no free client: the cursor falls back to implicit sessions */
        run->opened = amongo_session_open_nogil(job, NULL, &unused);
        if (run->opened) {
            run->client = run->opened->client;
            run->cs = run->opened->cs;
        }
    }
    /* Inside a transaction the transaction's concerns and read preference rule (as PyMongo):
     * libmongoc refuses an operation's own, so they are left out. */
    run->in_txn = job->session && job->session->user && run->cs &&
                  mongoc_client_session_in_transaction(run->cs);
    if (run->in_txn && run->prefs) {
        mongoc_read_prefs_destroy(run->prefs);
        run->prefs = NULL;
    }
    if (!bson_init_static(&run->cmd, job->cmd, job->cmd_len)) {
        bson_set_error(&job->error, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
                       "invalid command document");
        return false;
    }
    return true;
}

/* After the command: a session that opened a live cursor goes to the cursor; one whose cursor is
 * done (exhausted, killed, failed) goes back. Then everything the run took is given back. */
static void
command_leave_nogil(AmongoJob *job, CommandRun *run)
{
    bool live = job->ok && job->cursor_id != 0 &&
                (job->result_kind == AMONGO_RES_CURSOR || job->result_kind == AMONGO_RES_STREAM);
    if (run->opened) {
        if (live)
            job->out_session = run->opened;
        else
            amongo_session_free(run->opened);
    }
    if (job->session && !live && !job->session->user)
        amongo_session_release(job->session);
    if (run->prefs)
        mongoc_read_prefs_destroy(run->prefs);
    if (run->opts_built)
        bson_destroy(&run->opts);
    if (run->timed_built)
        bson_destroy(&run->timed_cmd);
    bson_destroy(&run->opts_in);
}

/* 1 if every server known after selecting one by `prefs` (which discovers the deployment) has
 * maxWireVersion >= `wire`, 0 if not, -1 with `error` set if no server matches `prefs`. */
static int
all_servers_since_nogil(mongoc_client_t *client, const mongoc_read_prefs_t *prefs, int wire,
                        bson_error_t *error)
{
    mongoc_server_description_t *sd = mongoc_client_select_server(client, false, prefs, error);
    if (!sd)
        return -1;
    mongoc_server_description_destroy(sd);
    size_t n = 0;
    mongoc_server_description_t **sds = mongoc_client_get_server_descriptions(client, &n);
    bool all = n > 0;
    for (size_t i = 0; i < n && all; i++) {
        const bson_t *hello = mongoc_server_description_hello_response(sds[i]);
        bson_iter_t it;
        all = hello && bson_iter_init_find(&it, hello, "maxWireVersion") &&
              bson_iter_as_int64(&it) >= wire;
    }
    mongoc_server_descriptions_destroy_all(sds, n);
    return all ? 1 : 0;
}

/* Where the command goes. A pipeline that writes ($out, $merge) with a non-primary read preference
 * may run on a secondary when every server is 5.0+ (the CRUD specification, as
 * mongoc_collection_aggregate decides), else on the primary with the preference dropped. A cursor
 * owner pins its server, so that getMore and killCursors reach the same one. False with
 * job->error set when no server can be selected. */
static bool
command_select_server_nogil(AmongoJob *job, CommandRun *run)
{
    if (job->op == AMONGO_OP_READ_WRITE && run->prefs && !run->in_txn &&
        mongoc_read_prefs_get_mode(run->prefs) != MONGOC_READ_PRIMARY) {
        int since = all_servers_since_nogil(run->client, run->prefs, 13, &job->error);
        if (since < 0)
            return false; /* no server for the preference: as PyMongo, a selection error */
        run->write_on_secondary = since == 1;
        if (!run->write_on_secondary) {
            mongoc_read_prefs_destroy(run->prefs);
            run->prefs = NULL;
        }
    }
    run->server_id = run->in_txn ? 0 : job->server_id; /* a transaction has its own server */
    if (!run->server_id && !run->in_txn && (job->flags & AMONGO_FLAG_PIN)) {
        bool for_writes =
            job->op != AMONGO_OP_READ && job->op != AMONGO_OP_COMMAND && !run->write_on_secondary;
        /* A read without its own preference follows the client's, as the command itself would. */
        const mongoc_read_prefs_t *select_prefs = run->prefs;
        if (!select_prefs && job->op == AMONGO_OP_READ)
            select_prefs = mongoc_client_get_read_prefs(run->client);
        mongoc_server_description_t *sd = mongoc_client_select_server(
            run->client, for_writes, for_writes ? NULL : select_prefs, &job->error);
        if (!sd)
            return false;
        run->server_id = mongoc_server_description_id(sd);
        mongoc_server_description_destroy(sd);
    }
    job->out_server_id = run->server_id;
    return true;
}

/* The options sent: the job's, with serverId and the session added, and inside a transaction
 * without the concerns the transaction sets. */
static const bson_t *
command_options_nogil(CommandRun *run)
{
    if (!run->server_id && !run->cs)
        return &run->opts_in;
    bson_init(&run->opts);
    run->opts_built = true;
    if (run->in_txn)
        bson_copy_to_excluding_noinit(&run->opts_in, &run->opts, "readConcern", "writeConcern",
                                      NULL);
    else
        bson_concat(&run->opts, &run->opts_in);
    if (run->server_id)
        BSON_APPEND_INT32(&run->opts, "serverId", (int32_t)run->server_id);
    if (run->cs)
        mongoc_client_session_append(run->cs, &run->opts, NULL);
    return &run->opts;
}

/* libmongoc's read-write command ignores read preferences: a write on a secondary is sent as a
 * read, with the write concern the read-write command would have added. */
static bool
command_write_on_secondary_nogil(AmongoJob *job, CommandRun *run, const bson_t *cmd,
                                 const bson_t *opts)
{
    bson_t with_wc;
    bson_init(&with_wc);
    bson_copy_to_excluding_noinit(opts, &with_wc, "writeConcern", NULL);
    bson_iter_t wc_it;
    const mongoc_write_concern_t *client_wc = mongoc_client_get_write_concern(run->client);
    if (bson_iter_init_find(&wc_it, opts, "writeConcern"))
        bson_append_iter(&with_wc, "writeConcern", -1, &wc_it);
    else if (!mongoc_write_concern_is_default(client_wc))
        mongoc_write_concern_append((mongoc_write_concern_t *)client_wc, &with_wc);
    bool ok = mongoc_client_read_command_with_opts(run->client, job->db, cmd, run->prefs, &with_wc,
                                                   &job->reply, &job->error);
    bson_destroy(&with_wc);
    return ok;
}

/* The libmongoc call for the operation kind. libmongoc initialises the reply on every path. */
static bool
command_dispatch_nogil(AmongoJob *job, CommandRun *run, const bson_t *cmd, const bson_t *opts)
{
    mongoc_client_t *c = run->client;
    switch (job->op) {
    case AMONGO_OP_READ:
        return mongoc_client_read_command_with_opts(c, job->db, cmd, run->prefs, opts, &job->reply,
                                                    &job->error);
    case AMONGO_OP_WRITE:
        return mongoc_client_write_command_with_opts(c, job->db, cmd, opts, &job->reply,
                                                     &job->error);
    case AMONGO_OP_READ_WRITE:
        if (run->write_on_secondary)
            return command_write_on_secondary_nogil(job, run, cmd, opts);
        return mongoc_client_read_write_command_with_opts(c, job->db, cmd, NULL, opts, &job->reply,
                                                          &job->error);
    default:
        return mongoc_client_command_with_opts(c, job->db, cmd, run->prefs, opts, &job->reply,
                                               &job->error);
    }
}

/* ---- Client Side Operations Timeout ------------------------------------------------------- */

/* The session in which the worker numbers its retryable writes under a deadline, or NULL (the
 * server has no sessions). libmongoc 1.23 gives a write command no txnNumber, so the core numbers
 * these writes itself, in a session of the worker's context that nothing else uses, and sends every
 * attempt of one write with the same number: the server applies it at most once. */
static mongoc_client_session_t *
worker_txn_session_nogil(AmongoWorkerCtx *ctx)
{
    if (!ctx->txn_session) {
        mongoc_session_opt_t *sopts = mongoc_session_opts_new();
        mongoc_session_opts_set_causal_consistency(sopts, false);
        bson_error_t unused;
        ctx->txn_session = mongoc_client_start_session(ctx->client, sopts, &unused);
        mongoc_session_opts_destroy(sopts);
        /* The server session may come from libmongoc's pool, numbered before by libmongoc (its
         * bulk writes): the core's numbers start above any it used, from the wall clock in
         * microseconds (libmongoc counts from 1), so the server never takes a write of ours for
         * an old one. */
        struct timeval now;
        bson_gettimeofday(&now);
        ctx->txn_number = (int64_t)now.tv_sec * 1000000 + now.tv_usec;
    }
    return ctx->txn_session;
}

/* The round trip time (ms) of the server the command goes to, the selected one else the fastest
 * known, as the core estimates it from libmongoc's averages (amongo_pool_rtt_nogil). */
static int64_t
command_rtt_ms_nogil(AmongoJob *job, CommandRun *run)
{
    if (run->server_id) {
        int64_t rtt = 0;
        mongoc_server_description_t *sd =
            mongoc_client_get_server_description(run->client, run->server_id);
        if (sd) {
            rtt = amongo_pool_rtt_nogil(job->pool, run->server_id,
                                        mongoc_server_description_round_trip_time(sd));
            mongoc_server_description_destroy(sd);
        }
        return rtt;
    }
    int64_t rtt = -1;
    size_t n = 0;
    mongoc_server_description_t **sds = mongoc_client_get_server_descriptions(run->client, &n);
    for (size_t i = 0; i < n; i++) {
        int64_t average = mongoc_server_description_round_trip_time(sds[i]);
        if (average < 0)
            continue; /* not checked yet */
        int64_t r = amongo_pool_rtt_nogil(job->pool, mongoc_server_description_id(sds[i]), average);
        if (rtt < 0 || r < rtt)
            rtt = r;
    }
    mongoc_server_descriptions_destroy_all(sds, n);
    return rtt > 0 ? rtt : 0;
}

/* Build the command this attempt sends: with maxTimeMS = time left - round trip (replacing one the
 * caller put there, as PyMongo does), and the write's txnNumber. False with the timeout error set,
 * unsent, when the time left does not cover a round trip (the specification's rule: it would only
 * time out on the socket and churn the connection). */
static bool
command_timed_nogil(AmongoJob *job, CommandRun *run, int64_t txn_number)
{
    if (run->timed_built)
        bson_destroy(&run->timed_cmd);
    run->timed_built = false;
    int64_t max_time_ms = 0;
    if (job->flags & AMONGO_FLAG_MAX_TIME) {
        int64_t left_ms = (job->deadline_us - bson_get_monotonic_time()) / 1000;
        int64_t rtt = command_rtt_ms_nogil(job, run);
        if (left_ms <= rtt) {
            bson_set_error(&job->error, AMONGO_ERROR_DOMAIN_TIMEOUT, 50,
                           "operation would exceed time limit, remaining timeout: %" PRId64
                           " ms <= network round trip time: %" PRId64 " ms",
                           left_ms, rtt);
            return false;
        }
        max_time_ms = left_ms - rtt;
        bson_iter_t it;
        if ((job->flags & AMONGO_FLAG_MAX_AWAIT) && bson_iter_init_find(&it, &run->cmd, "maxTimeMS") &&
            BSON_ITER_HOLDS_NUMBER(&it) && bson_iter_as_int64(&it) > 0 &&
            bson_iter_as_int64(&it) < max_time_ms)
            max_time_ms = bson_iter_as_int64(&it); /* the server's await, within the time left */
    }
    bson_init(&run->timed_cmd);
    run->timed_built = true;
    bson_copy_to_excluding_noinit(&run->cmd, &run->timed_cmd, "maxTimeMS", "txnNumber", NULL);
    if (max_time_ms)
        BSON_APPEND_INT64(&run->timed_cmd, "maxTimeMS", max_time_ms);
    if (txn_number)
        BSON_APPEND_INT64(&run->timed_cmd, "txnNumber", txn_number);
    return true;
}

/* Whether a failed attempt may be retried (the retryable reads and writes specifications): a
 * network error, or a server error libmongoc or the server calls retryable. */
static bool
command_retryable_nogil(AmongoJob *job)
{
    static const uint32_t read_codes[] = {6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602,
                                          13435, 13436};
    if (job->error.domain == MONGOC_ERROR_STREAM || job->error.domain == MONGOC_ERROR_SERVER_SELECTION)
        return job->error.domain == MONGOC_ERROR_STREAM;
    if (job->op != AMONGO_OP_READ) {
        bson_iter_t it, label;
        if (!bson_iter_init_find(&it, &job->reply, "errorLabels") || !BSON_ITER_HOLDS_ARRAY(&it) ||
            !bson_iter_recurse(&it, &label))
            return false;
        while (bson_iter_next(&label))
            if (BSON_ITER_HOLDS_UTF8(&label) && !strcmp(bson_iter_utf8(&label, NULL), "RetryableWriteError"))
                return true;
        return false;
    }
    for (size_t i = 0; i < sizeof read_codes / sizeof read_codes[0]; i++)
        if (job->error.code == read_codes[i])
            return true;
    return false;
}

/* Under a deadline: attempts until one succeeds, fails for good, or the time is up (the
 * specification's "as many times as possible"). The reply of the last attempt is kept. */
static void
command_run_timed_nogil(AmongoJob *job, CommandRun *run, const bson_t *opts)
{
    int64_t txn_number = 0;
    bson_t numbered;
    bool numbered_built = false;
    AmongoWorkerCtx *ctx = amongo_worker_current_nogil();
    mongoc_client_session_t *cs = NULL;
    if ((job->flags & AMONGO_FLAG_TXN_NUMBER) && !run->cs && ctx && ctx->client == run->client)
        cs = worker_txn_session_nogil(ctx);
    if (cs) {
        txn_number = ++ctx->txn_number;
        bson_init(&numbered);
        bson_copy_to_excluding_noinit(opts, &numbered, "sessionId", NULL);
        mongoc_client_session_append(cs, &numbered, NULL);
        opts = &numbered;
        numbered_built = true;
    }
    /* libmongoc's own retry of a read must not run under a deadline: it would come after a
     * timeout at the deadline and open a connection then, whose failure makes libmongoc mark the
     * server unknown and clear its pool. The core retries while time is left instead. The
     * option is the client's own copy of the URI (libmongoc's pooled clients copy it), used by
     * this thread alone while it holds the client. */
    mongoc_uri_t *uri = (mongoc_uri_t *)mongoc_client_get_uri(run->client);
    bool retry_reads = mongoc_uri_get_option_as_bool(uri, MONGOC_URI_RETRYREADS,
                                                     true /* libmongoc's default */);
    if (retry_reads && job->op == AMONGO_OP_READ)
        mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYREADS, false);
    for (;;) {
        if (job->deadline_us - bson_get_monotonic_time() <= AMONGO_DEADLINE_SLACK_US) {
            /* No time for anything (a new connection would fail its handshake at once) */
            job->ok = false;
            bson_set_error(&job->error, AMONGO_ERROR_DOMAIN_TIMEOUT, 50,
                           "operation would exceed time limit: its deadline has passed");
            bson_init(&job->reply);
            break;
        }
        if (!command_timed_nogil(job, run, txn_number)) {
            job->ok = false;
            bson_init(&job->reply);
            break;
        }
        job->ok = command_dispatch_nogil(job, run, &run->timed_cmd, opts);
        /* A retry needs the time of a round trip: else the last attempt's error stands (as
         * PyMongo, which raises the last error once the time is up). */
        bool again = !job->ok && (job->flags & AMONGO_FLAG_RETRY) && !run->in_txn &&
                     (job->op == AMONGO_OP_READ || txn_number) && command_retryable_nogil(job) &&
                     (job->deadline_us - AMONGO_DEADLINE_SLACK_US - bson_get_monotonic_time()) /
                             1000 > command_rtt_ms_nogil(job, run);
        if (!again)
            break;
        bson_destroy(&job->reply);
    }
    if (retry_reads && job->op == AMONGO_OP_READ)
        mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYREADS, true);
    if (numbered_built)
        bson_destroy(&numbered);
}

/* Whether a failed attempt never reached the server: the connection's handshake failed (libmongoc
 * 1.23 reports it as a stream error whose message names the handshake's command: it gives no code
 * of its own). libmongoc's retryable reads and writes do not cover that case, PyMongo's do. */
static bool
command_handshake_failed_nogil(const AmongoJob *job)
{
    return job->error.domain == MONGOC_ERROR_STREAM &&
           (strstr(job->error.message, "\"isMaster\" command") ||
            strstr(job->error.message, "\"hello\" command"));
}

/* One attempt, and one more for a read whose connection failed its handshake (it never ran):
 * reads are idempotent, and PyMongo retries this case too. */
static void
command_run_nogil(AmongoJob *job, CommandRun *run, const bson_t *opts)
{
    job->ok = command_dispatch_nogil(job, run, &run->cmd, opts);
    if (!job->ok && job->op == AMONGO_OP_READ && !run->in_txn && command_handshake_failed_nogil(job)) {
        bson_destroy(&job->reply);
        job->ok = command_dispatch_nogil(job, run, &run->cmd, opts);
    }
}

void
amongo_job_run_command_nogil(AmongoJob *job, mongoc_client_t *client)
{
    CommandRun run;
    if (command_enter_nogil(job, client, &run) && command_select_server_nogil(job, &run)) {
        if (job->deadline_us)
            command_run_timed_nogil(job, &run, command_options_nogil(&run));
        else
            command_run_nogil(job, &run, command_options_nogil(&run));
    } else {
        job->ok = false;
        bson_init(&job->reply);
    }
    amongo_job_keep_reply_nogil(job);
    if (job->ok && (job->result_kind == AMONGO_RES_FIRST || job->result_kind == AMONGO_RES_CURSOR ||
                    job->result_kind == AMONGO_RES_STREAM))
        command_extract_batch_nogil(job);
    command_leave_nogil(job, &run);
}
