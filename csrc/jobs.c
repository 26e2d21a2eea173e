/* jobs.c: the life of one operation: run on a worker (no GIL), then complete on the loop thread.
 * job_run_nogil calls libmongoc and leaves plain C results in the job; it never touches a PyObject.
 * job_complete decodes the reply with PyMongo's bson (over a memoryview: no copy), builds the result
 * or the exception and resolves the future; references are dropped on the loop thread only. */
#include "asyncmongo.h"

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
    if (job->out_session) { /* opened but never handed to a cursor (e.g. it was cancelled) */
        amongo_session_release_nogil(job->out_session);
        pthread_mutex_destroy(&job->out_session->mu);
        free(job->out_session);
    }
    Py_XDECREF(job->session_obj);
    amongo_apm_free_events(job);
    Py_XDECREF(job->apm_sink);
    Py_XDECREF(job->future);
    Py_XDECREF(job->db_obj);
    Py_XDECREF(job->coll_obj);
    Py_XDECREF(job->cmd_obj);
    Py_XDECREF(job->opts_obj);
    Py_XDECREF(job->codec_options);
    if (job->queue)
        amongo_queue_release(job->queue);
    Py_XDECREF(job->owner);
    free(job);
    atomic_fetch_sub_explicit(&amongo_counters.jobs_live, 1, memory_order_relaxed);
}

/* ---- worker side (no GIL) ---------------------------------------------------------------- */

static void
job_keep_reply_nogil(AmongoJob *job)
{
    job->has_reply = true;
    atomic_fetch_add_explicit(&amongo_counters.replies_live, 1, memory_order_relaxed);
}

/* Find cursor.{firstBatch,nextBatch} and cursor.id in a command reply. For AMONGO_RES_FIRST keep a
 * pointer to the first document; for AMONGO_RES_CURSOR copy the documents end to end, so that the
 * loop thread decodes the whole batch with one decode_all call. */
static void
job_extract_batch_nogil(AmongoJob *job)
{
    bson_iter_t it, cursor;
    if (!bson_iter_init_find(&it, &job->reply, "cursor") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !bson_iter_recurse(&it, &cursor)) {
        job->ok = false;
        bson_set_error(&job->error, MONGOC_ERROR_PROTOCOL, MONGOC_ERROR_PROTOCOL_INVALID_REPLY,
                       "the server's reply has no cursor document");
        return;
    }
    bson_iter_t batch;
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
    if (!have_batch)
        return;
    bson_iter_t doc;
    if (!bson_iter_recurse(&batch, &doc))
        return;
    if (job->result_kind == AMONGO_RES_FIRST) {
        while (bson_iter_next(&doc)) {
            if (BSON_ITER_HOLDS_DOCUMENT(&doc)) {
                uint32_t len;
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
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&count, &len, &data);
            total += len;
        }
    }
    if (!total)
        return;
    job->batch = bson_malloc(total);
    while (bson_iter_next(&doc)) {
        if (BSON_ITER_HOLDS_DOCUMENT(&doc)) {
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&doc, &len, &data);
            memcpy(job->batch + job->batch_len, data, len);
            job->batch_len += len;
        }
    }
}

/* After a cursor command: keep a session that opened a live cursor; release one whose cursor is
 * done (exhausted, killed, failed); unlock the cursor's session taken for this job. */
static void
job_finish_session_nogil(AmongoJob *job, AmongoCursorSession *opened)
{
    bool live = job->ok && job->cursor_id != 0 &&
                (job->result_kind == AMONGO_RES_CURSOR || job->result_kind == AMONGO_RES_STREAM);
    if (opened) {
        if (live) {
            job->out_session = opened;
        } else {
            amongo_session_release_nogil(opened);
            pthread_mutex_destroy(&opened->mu);
            free(opened);
        }
    }
    if (job->session) {
        if (!live && !job->session->user)
            amongo_session_release_nogil(job->session);
        pthread_mutex_unlock(&job->session->mu);
    }
}

/* 1 if every server known after selecting one by `prefs` (which discovers the deployment) has
 * maxWireVersion >= `wire`, 0 if not, -1 with `error` set if no server matches `prefs`. */
static int
job_all_servers_since_nogil(mongoc_client_t *client, const mongoc_read_prefs_t *prefs, int wire,
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

/* {mode: "secondary", tags: [...], maxStalenessSeconds: n} -> mongoc_read_prefs_t (caller frees). */
static mongoc_read_prefs_t *
job_read_prefs_nogil(bson_iter_t *doc)
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
    if (!bson_iter_recurse(doc, &f))
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

static void
job_run_command_nogil(AmongoJob *job, mongoc_client_t *client)
{
    bson_t cmd, opts_static, opts;
    if (!bson_init_static(&cmd, job->cmd, job->cmd_len)) {
        bson_set_error(&job->error, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
                       "invalid command document");
        return;
    }
    if (job->opts_len)
        bson_init_static(&opts_static, job->opts, job->opts_len);
    else
        bson_init(&opts_static);

    /* The read preference travels in the options as "$readPreference" (ours, not the server's). */
    bson_iter_t it;
    mongoc_read_prefs_t *prefs = NULL;
    if (bson_iter_init_find(&it, &opts_static, "$readPreference") && BSON_ITER_HOLDS_DOCUMENT(&it))
        prefs = job_read_prefs_nogil(&it);

    /* A cursor's getMores and killCursors run in the session that opened it (sessions.c). */
    mongoc_client_t *use_client = client;
    mongoc_client_session_t *cs = NULL;
    AmongoCursorSession *opened = NULL;
    if (job->session) {
        pthread_mutex_lock(&job->session->mu);
        if (job->session->client) {
            use_client = job->session->client;
            cs = job->session->cs;
        }
    } else if ((job->flags & AMONGO_FLAG_PIN) && job->mpool) {
        bson_error_t unused;
        opened = amongo_session_open_nogil(job, NULL, &unused);
        if (opened) {
            use_client = opened->client;
            cs = opened->cs;
        }
    }

    /* Inside a transaction the transaction's concerns and read preference rule (as PyMongo):
     * libmongoc refuses an operation's own, so they are left out. */
    bool in_txn = job->session && job->session->user && cs && mongoc_client_session_in_transaction(cs);
    if (in_txn && prefs) {
        mongoc_read_prefs_destroy(prefs);
        prefs = NULL;
    }

    /* A pipeline that writes ($out, $merge) with a non-primary read preference may run on a
     * secondary when every server is 5.0+ (the CRUD specification, as mongoc_collection_aggregate
     * decides); else it goes to the primary and the preference is dropped. */
    bool write_on_secondary = false;
    if (job->op == AMONGO_OP_READ_WRITE && prefs && !in_txn &&
        mongoc_read_prefs_get_mode(prefs) != MONGOC_READ_PRIMARY) {
        int since = job_all_servers_since_nogil(use_client, prefs, 13, &job->error);
        if (since < 0) { /* no server for the preference: as PyMongo, a selection error */
            bson_init(&job->reply);
            job_keep_reply_nogil(job);
            mongoc_read_prefs_destroy(prefs);
            bson_destroy(&opts_static);
            job_finish_session_nogil(job, opened);
            return;
        }
        write_on_secondary = since == 1;
        if (!write_on_secondary) {
            mongoc_read_prefs_destroy(prefs);
            prefs = NULL;
        }
    }

    /* Cursor owners pin their server: getMore and killCursors must reach the same one. */
    uint32_t server_id = in_txn ? 0 : job->server_id; /* a transaction has its own server */
    if (!server_id && !in_txn && (job->flags & AMONGO_FLAG_PIN)) {
        bool for_writes =
            job->op != AMONGO_OP_READ && job->op != AMONGO_OP_COMMAND && !write_on_secondary;
        /* A read without its own preference follows the client's, as the command itself would. */
        const mongoc_read_prefs_t *select_prefs = prefs;
        if (!select_prefs && job->op == AMONGO_OP_READ)
            select_prefs = mongoc_client_get_read_prefs(use_client);
        mongoc_server_description_t *sd = mongoc_client_select_server(
            use_client, for_writes, for_writes ? NULL : select_prefs, &job->error);
        if (!sd) {
            bson_init(&job->reply);
            job_keep_reply_nogil(job);
            if (prefs)
                mongoc_read_prefs_destroy(prefs);
            bson_destroy(&opts_static);
            job_finish_session_nogil(job, opened);
            return;
        }
        server_id = mongoc_server_description_id(sd);
        mongoc_server_description_destroy(sd);
    }
    const bson_t *use_opts = &opts_static;
    if (server_id || prefs || cs) {
        bson_init(&opts);
        if (in_txn)
            bson_copy_to_excluding_noinit(&opts_static, &opts, "$readPreference", "readConcern",
                                          "writeConcern", NULL);
        else
            bson_copy_to_excluding_noinit(&opts_static, &opts, "$readPreference", NULL);
        if (server_id)
            BSON_APPEND_INT32(&opts, "serverId", (int32_t)server_id);
        if (cs)
            mongoc_client_session_append(cs, &opts, NULL);
        use_opts = &opts;
    }
    job->out_server_id = server_id;

    switch (job->op) {
    case AMONGO_OP_READ:
        job->ok = mongoc_client_read_command_with_opts(use_client, job->db, &cmd, prefs, use_opts,
                                                       &job->reply, &job->error);
        break;
    case AMONGO_OP_WRITE:
        job->ok = mongoc_client_write_command_with_opts(use_client, job->db, &cmd, use_opts, &job->reply,
                                                        &job->error);
        break;
    case AMONGO_OP_READ_WRITE:
        if (write_on_secondary) {
            /* libmongoc's read-write command ignores read preferences: send it as a read, with
             * the write concern the read-write command would have added. */
            bson_t with_wc;
            bson_init(&with_wc);
            bson_copy_to_excluding_noinit(use_opts, &with_wc, "writeConcern", NULL);
            bson_iter_t wc_it;
            if (bson_iter_init_find(&wc_it, use_opts, "writeConcern"))
                bson_append_iter(&with_wc, "writeConcern", -1, &wc_it);
            else if (!mongoc_write_concern_is_default(mongoc_client_get_write_concern(use_client)))
                mongoc_write_concern_append((mongoc_write_concern_t *)mongoc_client_get_write_concern(use_client),
                                            &with_wc);
            job->ok = mongoc_client_read_command_with_opts(use_client, job->db, &cmd, prefs, &with_wc,
                                                           &job->reply, &job->error);
            bson_destroy(&with_wc);
        } else {
            job->ok = mongoc_client_read_write_command_with_opts(use_client, job->db, &cmd, NULL,
                                                                 use_opts, &job->reply, &job->error);
        }
        break;
    default:
        job->ok = mongoc_client_command_with_opts(use_client, job->db, &cmd, prefs, use_opts, &job->reply,
                                                  &job->error);
        break;
    }
    job_keep_reply_nogil(job); /* libmongoc initialises the reply on every path */
    if (prefs)
        mongoc_read_prefs_destroy(prefs);
    if (use_opts == &opts)
        bson_destroy(&opts);
    bson_destroy(&opts_static);
    if (job->ok && (job->result_kind == AMONGO_RES_FIRST || job->result_kind == AMONGO_RES_CURSOR ||
                    job->result_kind == AMONGO_RES_STREAM))
        job_extract_batch_nogil(job);
    job_finish_session_nogil(job, opened);
}

/* Keys are left to the server's rules, not libmongoc 1.23's older client-side checks. */
static bool
insert_add_nogil(mongoc_bulk_operation_t *bulk, const bson_t *doc, bson_error_t *error)
{
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&opts, "validate", false);
    bool ok = mongoc_bulk_operation_insert_with_opts(bulk, doc, &opts, error);
    bson_destroy(&opts);
    return ok;
}

/* Bulk write: job->cmd holds operation documents end to end, each
 *   {op: int, d: filter-or-document, u: update-or-replacement (document or pipeline array),
 *    o: per-operation options (upsert, collation, arrayFilters, hint)}
 * with op 0 insert, 1 updateOne, 2 updateMany, 3 replaceOne, 4 deleteOne, 5 deleteMany. */
static bool
bulk_add_nogil(mongoc_bulk_operation_t *bulk, const bson_t *spec, bson_error_t *error)
{
    bson_iter_t it;
    int op = -1;
    bson_t d = BSON_INITIALIZER, u = BSON_INITIALIZER, o = BSON_INITIALIZER;
    bool have_d = false, have_u = false, have_o = false;
    if (!bson_iter_init(&it, spec))
        return false;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        uint32_t len;
        const uint8_t *data;
        if (!strcmp(key, "op")) {
            op = (int)bson_iter_as_int64(&it);
        } else if ((BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) &&
                   (!strcmp(key, "d") || !strcmp(key, "u") || !strcmp(key, "o"))) {
            if (BSON_ITER_HOLDS_DOCUMENT(&it))
                bson_iter_document(&it, &len, &data);
            else
                bson_iter_array(&it, &len, &data);
            bson_t *dst = key[0] == 'd' ? &d : key[0] == 'u' ? &u : &o;
            bson_init_static(dst, data, len);
            *(key[0] == 'd' ? &have_d : key[0] == 'u' ? &have_u : &have_o) = true;
        }
    }
    (void)have_o;
    if (!have_d || ((op >= 1 && op <= 3) && !have_u)) {
        bson_set_error(error, MONGOC_ERROR_COMMAND, MONGOC_ERROR_COMMAND_INVALID_ARG,
                       "malformed bulk operation");
        return false;
    }
    switch (op) {
    case 0:
        return insert_add_nogil(bulk, &d, error);
    case 1:
        return mongoc_bulk_operation_update_one_with_opts(bulk, &d, &u, &o, error);
    case 2:
        return mongoc_bulk_operation_update_many_with_opts(bulk, &d, &u, &o, error);
    case 3:
        return mongoc_bulk_operation_replace_one_with_opts(bulk, &d, &u, &o, error);
    case 4:
        return mongoc_bulk_operation_remove_one_with_opts(bulk, &d, &o, error);
    case 5:
        return mongoc_bulk_operation_remove_many_with_opts(bulk, &d, &o, error);
    default:
        bson_set_error(error, MONGOC_ERROR_COMMAND, MONGOC_ERROR_COMMAND_INVALID_ARG,
                       "unknown bulk operation %d", op);
        return false;
    }
}

/* Inserts (AMONGO_OP_INSERT: documents end to end) and bulk writes (AMONGO_OP_BULK: operation
 * documents end to end) go through one libmongoc bulk operation: it sends OP_MSG document
 * sequences and splits batches by the server's size limits. */
static void
job_run_bulk_nogil(AmongoJob *job, mongoc_client_t *client,
                   bool (*add)(mongoc_bulk_operation_t *, const bson_t *, bson_error_t *))
{
    bson_t opts;
    if (job->opts_len)
        bson_init_static(&opts, job->opts, job->opts_len);
    else
        bson_init(&opts);
    /* In an explicit session: its client, its session, one job at a time. */
    AmongoCursorSession *session = job->session;
    if (session) {
        pthread_mutex_lock(&session->mu);
        if (session->client)
            client = session->client;
    }
    /* In a transaction, the transaction's write concern rules (libmongoc refuses an operation's). */
    bson_t txn_opts = BSON_INITIALIZER;
    const bson_t *bulk_opts = &opts;
    if (session && session->client && mongoc_client_session_in_transaction(session->cs)) {
        bson_copy_to_excluding_noinit(&opts, &txn_opts, "writeConcern", NULL);
        bulk_opts = &txn_opts;
    }
    mongoc_collection_t *coll = mongoc_client_get_collection(client, job->db, job->coll);
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, bulk_opts);
    if (session && session->client)
        mongoc_bulk_operation_set_client_session(bulk, session->cs);
    if (job->flags & AMONGO_FLAG_BYPASS)
        mongoc_bulk_operation_set_bypass_document_validation(bulk, true);
    bool ok = true;
    size_t off = 0;
    while (ok && off + 5 <= job->cmd_len) {
        int32_t len;
        memcpy(&len, job->cmd + off, 4);
        len = BSON_UINT32_FROM_LE(len);
        bson_t doc;
        if (len < 5 || off + (size_t)len > job->cmd_len ||
            !bson_init_static(&doc, job->cmd + off, (size_t)len)) {
            bson_set_error(&job->error, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
                           "invalid document at offset %zu", off);
            ok = false;
            break;
        }
        ok = add(bulk, &doc, &job->error);
        off += (size_t)len;
    }
    if (ok) {
        job->ok = mongoc_bulk_operation_execute(bulk, &job->reply, &job->error) != 0;
    } else {
        bson_init(&job->reply);
        job->ok = false;
    }
    job_keep_reply_nogil(job);
    mongoc_bulk_operation_destroy(bulk);
    mongoc_collection_destroy(coll);
    bson_destroy(&opts);
    bson_destroy(&txn_opts);
    if (session)
        pthread_mutex_unlock(&session->mu);
}

/* Transaction options {readConcern: {level}, writeConcern: {w, j, wtimeout},
 * readPreference: {mode, ...}, maxCommitTimeMS} -> mongoc_transaction_opt_t (caller frees). */
static mongoc_transaction_opt_t *
job_transaction_opts_nogil(const bson_t *opts)
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
        mongoc_read_prefs_t *prefs = job_read_prefs_nogil(&it);
        if (prefs) {
            mongoc_transaction_opts_set_read_prefs(topts, prefs);
            mongoc_read_prefs_destroy(prefs);
        }
    }
    if (bson_iter_init_find(&it, opts, "maxCommitTimeMS"))
        mongoc_transaction_opts_set_max_commit_time_ms(topts, bson_iter_as_int64(&it));
    return topts;
}

/* An explicit session's life (AMONGO_OP_SESSION): job->cmd is {do: action, opts: {...}}.
 * "start" opens the session (the capsule comes back as the result); the other actions act on
 * job->session under its mutex: a transaction's start, commit (the server's reply is kept: its
 * error labels matter) and abort; "end" aborts an open transaction and gives back the client. */
static void
job_run_session_nogil(AmongoJob *job)
{
    bson_t cmd, opts;
    bson_iter_t it;
    const char *action = "";
    if (!bson_init_static(&cmd, job->cmd, job->cmd_len)) {
        bson_init(&job->reply);
        job_keep_reply_nogil(job);
        bson_set_error(&job->error, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID, "invalid session request");
        return;
    }
    if (bson_iter_init_find(&it, &cmd, "do") && BSON_ITER_HOLDS_UTF8(&it))
        action = bson_iter_utf8(&it, NULL);
    bson_init(&opts);
    if (bson_iter_init_find(&it, &cmd, "opts") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&it, &len, &data);
        bson_destroy(&opts);
        if (!bson_init_static(&opts, data, len))
            bson_init(&opts);
    }

    if (!strcmp(action, "start")) {
        bson_init(&job->reply);
        job->out_session = amongo_session_open_nogil(job, &opts, &job->error);
        job->ok = job->out_session != NULL;
    } else if (!job->session) {
        bson_init(&job->reply);
        bson_set_error(&job->error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                       "no session given for '%s'", action);
    } else {
        AmongoCursorSession *s = job->session;
        pthread_mutex_lock(&s->mu);
        if (!strcmp(action, "commit") && s->client) {
            /* libmongoc initialises the reply on every path */
            job->ok = mongoc_client_session_commit_transaction(s->cs, &job->reply, &job->error);
        } else {
            bson_init(&job->reply);
            if (!s->client) {
                job->ok = !strcmp(action, "end"); /* ending twice is harmless */
                if (!job->ok)
                    bson_set_error(&job->error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                                   "the session has ended");
            } else if (!strcmp(action, "startTransaction")) {
                mongoc_transaction_opt_t *topts = job_transaction_opts_nogil(&opts);
                job->ok = mongoc_client_session_start_transaction(s->cs, topts, &job->error);
                mongoc_transaction_opts_destroy(topts);
            } else if (!strcmp(action, "abort")) {
                job->ok = mongoc_client_session_abort_transaction(s->cs, &job->error);
            } else if (!strcmp(action, "end")) {
                amongo_session_release_nogil(s); /* aborts an open transaction */
                job->ok = true;
            } else {
                bson_set_error(&job->error, MONGOC_ERROR_CLIENT, MONGOC_ERROR_CLIENT_SESSION_FAILURE,
                               "unknown session action '%s'", action);
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    job_keep_reply_nogil(job);
    bson_destroy(&opts);
}

void
amongo_job_run_nogil(AmongoJob *job, mongoc_client_t *client)
{
    amongo_apm_set_current_nogil(job);
    int64_t start = bson_get_monotonic_time();
    switch (job->op) {
    case AMONGO_OP_INSERT:
        job_run_bulk_nogil(job, client, insert_add_nogil);
        break;
    case AMONGO_OP_BULK:
        job_run_bulk_nogil(job, client, bulk_add_nogil);
        break;
    case AMONGO_OP_BARRIER:
        job->ok = true;
        break;
    case AMONGO_OP_SESSION:
        job_run_session_nogil(job);
        break;
    default:
        job_run_command_nogil(job, client);
        break;
    }
    job->elapsed_us = bson_get_monotonic_time() - start;
    amongo_apm_set_current_nogil(NULL);
}

/* ---- loop side (GIL held) ---------------------------------------------------------------- */

/* NEW: decode one BSON document of `len` bytes at `data` with `codec_options`. */
static PyObject *
decode_doc(AmongoState *st, const uint8_t *data, size_t len, PyObject *codec_options)
{
    PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)len, PyBUF_READ);
    if (!view)
        return NULL;
    PyObject *doc = PyObject_CallFunctionObjArgs(st->bson_to_dict, view, codec_options, NULL);
    Py_DECREF(view);
    return doc;
}

/* NEW: decode concatenated documents into a list with one call. */
static PyObject *
decode_batch(AmongoState *st, const uint8_t *data, size_t len, PyObject *codec_options)
{
    if (!len)
        return PyList_New(0);
    PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)len, PyBUF_READ);
    if (!view)
        return NULL;
    PyObject *docs = PyObject_CallFunctionObjArgs(st->decode_all, view, codec_options, NULL);
    Py_DECREF(view);
    return docs;
}

/* NEW: {postBatchResumeToken, operationTime} of a change stream's reply, those it has. */
static PyObject *
reply_stream_meta(AmongoState *st, const bson_t *reply)
{
    bson_t meta = BSON_INITIALIZER;
    bson_iter_t it;
    if (bson_iter_init(&it, reply) && bson_iter_find_descendant(&it, "cursor.postBatchResumeToken", &it))
        bson_append_iter(&meta, "postBatchResumeToken", -1, &it);
    if (bson_iter_init_find(&it, reply, "operationTime"))
        bson_append_iter(&meta, "operationTime", -1, &it);
    PyObject *doc = decode_doc(st, bson_get_data(&meta), meta.len, st->default_codec_options);
    bson_destroy(&meta);
    return doc;
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
    case AMONGO_RES_STREAM: {
        PyObject *docs = decode_batch(st, job->batch, job->batch_len, codec);
        if (!docs)
            return NULL;
        PyObject *ns = reply_ns(&job->reply);
        if (!ns) {
            Py_DECREF(docs);
            return NULL;
        }
        PyObject *session = Py_None;
        if (job->out_session) {
            session = amongo_session_capsule(job->out_session); /* steals it */
            job->out_session = NULL;
            if (!session) {
                Py_DECREF(docs);
                Py_DECREF(ns);
                return NULL;
            }
        } else {
            Py_INCREF(session);
        }
        if (job->result_kind == AMONGO_RES_STREAM) {
            PyObject *meta = reply_stream_meta(st, &job->reply);
            if (!meta) {
                Py_DECREF(docs);
                Py_DECREF(ns);
                Py_DECREF(session);
                return NULL;
            }
            return Py_BuildValue("(LNNkNN)", (long long)job->cursor_id, ns, docs,
                                 (unsigned long)job->out_server_id, session, meta);
        }
        return Py_BuildValue("(LNNkN)", (long long)job->cursor_id, ns, docs,
                             (unsigned long)job->out_server_id, session);
    }
    case AMONGO_RES_SESSION:
        if (job->out_session) {
            AmongoCursorSession *s = job->out_session;
            job->out_session = NULL;
            return amongo_session_capsule(s); /* steals it */
        }
        Py_RETURN_NONE;
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

void
amongo_job_complete(AmongoState *st, AmongoJob *job)
{
    atomic_fetch_add_explicit(&amongo_counters.jobs_completed, 1, memory_order_relaxed);
    PyObject *done = PyObject_CallMethodNoArgs(job->future, st->str_done);
    if (!done) {
        PyErr_WriteUnraisable(job->future);
        return;
    }
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    /* Listeners hear about the commands before the caller hears the outcome, as with PyMongo. */
    if (job->events && amongo_apm_deliver(st, job) < 0)
        PyErr_WriteUnraisable(job->future);
    if (is_done) /* cancelled while it ran: the result is dropped */
        return;
    if (job->flags & AMONGO_FLAG_QUIET) {
        future_resolve(st, job->future, Py_None, false);
        return;
    }

    PyObject *value = NULL;
    bool is_exception = false;
    bool write = job->result_kind == AMONGO_RES_WRITE || job->result_kind == AMONGO_RES_BULK;
    if (write && job->has_reply) {
        /* Write errors come back in an ok reply, and a failed bulk still carries its partial
         * result: look at the reply before at libmongoc's verdict. */
        value = job_result(st, job);
        if (value) {
            PyObject *exc = amongo_write_error(st, value, job->result_kind == AMONGO_RES_BULK);
            if (exc || PyErr_Occurred() || !job->ok) {
                Py_SETREF(value, exc ? exc : PyErr_Occurred() ? NULL : amongo_error_from_job(st, job));
                is_exception = true;
            }
        }
    } else if (job->ok) {
        value = job_result(st, job);
    } else {
        value = amongo_error_from_job(st, job);
        is_exception = true;
    }
    if (!value) {
        /* Decoding or building the exception failed: that failure is what the caller gets. */
        PyObject *type, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value && tb)
            PyException_SetTraceback(value, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        is_exception = true;
        if (!value) {
            value = PyObject_CallFunction(PyExc_SystemError, "s", "asyncmongo: job without result");
            if (!value) {
                PyErr_WriteUnraisable(job->future);
                return;
            }
        }
    }
    future_resolve(st, job->future, value, is_exception);
    Py_DECREF(value);
}

void
amongo_job_discard(AmongoJob *job)
{
    (void)job;
    atomic_fetch_add_explicit(&amongo_counters.jobs_completed, 1, memory_order_relaxed);
}
