/* bulk.c: inserts (AMONGO_OP_INSERT: documents end to end) and bulk writes (AMONGO_OP_BULK:
 * operation documents end to end), each through one libmongoc bulk operation, which sends OP_MSG
 * document sequences, splits batches by the server's size limits and retries as the retryable
 * writes specification says. Pure C, no GIL. */
#include "asyncmongo.h"

typedef bool (*BulkAdd)(mongoc_bulk_operation_t *, const bson_t *, bson_error_t *);

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

/* One operation document {op: AMONGO_BULK_*, d: filter-or-document, u: update-or-replacement
 * (document or pipeline array), o: per-operation options (upsert, collation, arrayFilters, hint)}. */
static bool
bulk_add_nogil(mongoc_bulk_operation_t *bulk, const bson_t *spec, bson_error_t *error)
{
    bson_iter_t it;
    int op = -1;
    bson_t d = BSON_INITIALIZER, u = BSON_INITIALIZER, o = BSON_INITIALIZER;
    bool have_d = false, have_u = false;
    if (!bson_iter_init(&it, spec))
        return false;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        uint32_t len;
        const uint8_t *data;
        if (!strcmp(key, "op")) {
            op = (int)bson_iter_as_int64(&it);
            continue;
        }
        bson_t *dst = !strcmp(key, "d") ? &d : !strcmp(key, "u") ? &u : !strcmp(key, "o") ? &o : NULL;
        if (!dst || !(BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)))
            continue;
        if (BSON_ITER_HOLDS_DOCUMENT(&it))
            bson_iter_document(&it, &len, &data);
        else
            bson_iter_array(&it, &len, &data);
        bson_init_static(dst, data, len);
        have_d |= dst == &d;
        have_u |= dst == &u;
    }
    bool needs_u = op == AMONGO_BULK_UPDATE_ONE || op == AMONGO_BULK_UPDATE_MANY ||
                   op == AMONGO_BULK_REPLACE_ONE;
    if (!have_d || (needs_u && !have_u)) {
        bson_set_error(error, MONGOC_ERROR_COMMAND, MONGOC_ERROR_COMMAND_INVALID_ARG,
                       "malformed bulk operation");
        return false;
    }
    switch (op) {
    case AMONGO_BULK_INSERT:
        return insert_add_nogil(bulk, &d, error);
    case AMONGO_BULK_UPDATE_ONE:
        return mongoc_bulk_operation_update_one_with_opts(bulk, &d, &u, &o, error);
    case AMONGO_BULK_UPDATE_MANY:
        return mongoc_bulk_operation_update_many_with_opts(bulk, &d, &u, &o, error);
    case AMONGO_BULK_REPLACE_ONE:
        return mongoc_bulk_operation_replace_one_with_opts(bulk, &d, &u, &o, error);
    case AMONGO_BULK_DELETE_ONE:
        return mongoc_bulk_operation_remove_one_with_opts(bulk, &d, &o, error);
    case AMONGO_BULK_DELETE_MANY:
        return mongoc_bulk_operation_remove_many_with_opts(bulk, &d, &o, error);
    default:
        bson_set_error(error, MONGOC_ERROR_COMMAND, MONGOC_ERROR_COMMAND_INVALID_ARG,
                       "unknown bulk operation %d", op);
        return false;
    }
}

/* Add each document of job->cmd (end to end) with `add`; false with job->error at the first bad one. */
static bool
bulk_add_all_nogil(AmongoJob *job, mongoc_bulk_operation_t *bulk, BulkAdd add)
{
    size_t off = 0;
    while (off + 5 <= job->cmd_len) {
        int32_t len;
        memcpy(&len, job->cmd + off, 4);
        len = BSON_UINT32_FROM_LE(len);
        bson_t doc;
        if (len < 5 || off + (size_t)len > job->cmd_len ||
            !bson_init_static(&doc, job->cmd + off, (size_t)len)) {
            bson_set_error(&job->error, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
                           "invalid document at offset %zu", off);
            return false;
        }
        if (!add(bulk, &doc, &job->error))
            return false;
        off += (size_t)len;
    }
    return true;
}

static void
bulk_run_nogil(AmongoJob *job, mongoc_client_t *client, BulkAdd add)
{
    bson_t opts;
    if (job->opts_len)
        bson_init_static(&opts, job->opts, job->opts_len);
    else
        bson_init(&opts);
    /* In a session: its client and its session (its jobs run one at a time, in order). */
    AmongoSession *session = job->session;
    if (session && session->client)
        client = session->client;
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
    if (bulk_add_all_nogil(job, bulk, add)) {
        job->ok = mongoc_bulk_operation_execute(bulk, &job->reply, &job->error) != 0;
    } else {
        bson_init(&job->reply);
        job->ok = false;
    }
    amongo_job_keep_reply_nogil(job);
    mongoc_bulk_operation_destroy(bulk);
    mongoc_collection_destroy(coll);
    bson_destroy(&opts);
    bson_destroy(&txn_opts);
}

void
amongo_job_run_insert_nogil(AmongoJob *job, mongoc_client_t *client)
{
    bulk_run_nogil(job, client, insert_add_nogil);
}

void
amongo_job_run_bulk_nogil(AmongoJob *job, mongoc_client_t *client)
{
    bulk_run_nogil(job, client, bulk_add_nogil);
}
