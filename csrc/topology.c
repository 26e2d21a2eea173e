/* topology.c: what libmongoc knows of the deployment (server and topology descriptions), for the
 * client's topology facts and the SDAM events. A description is copied into a BSON document on the
 * thread that has it (a monitor thread, a worker: pure C, no GIL); the loop thread turns such a
 * document into a ServerFacts or TopologyFacts struct sequence. The BSON layout is private to this
 * file: nothing outside reads it. */
#include "asyncmongo.h"

/* The private layout: a server {h: host, p: port, id, t: type, rtt: ms or -1, lu: last update in
 * microseconds of the monotonic clock, hello: its last hello reply}; a topology {t: type, s: [server,
 * ...]}. */

void
amongo_server_facts_append_nogil(bson_t *parent, const char *key,
                                 const mongoc_server_description_t *sd)
{
    bson_t doc;
    mongoc_host_list_t *host = mongoc_server_description_host(sd);
    const bson_t *hello = mongoc_server_description_hello_response(sd);
    bson_append_document_begin(parent, key, -1, &doc);
    bson_append_utf8(&doc, "h", 1, host->host, -1);
    bson_append_int32(&doc, "p", 1, host->port);
    bson_append_int64(&doc, "id", 2, (int64_t)mongoc_server_description_id(sd));
    bson_append_utf8(&doc, "t", 1, mongoc_server_description_type(sd), -1);
    bson_append_int64(&doc, "rtt", 3, mongoc_server_description_round_trip_time(sd));
    bson_append_int64(&doc, "lu", 2, mongoc_server_description_last_update_time(sd));
    bson_t empty = BSON_INITIALIZER;
    bson_append_document(&doc, "hello", 5, hello ? hello : &empty);
    bson_append_document_end(parent, &doc);
}

static void
unknown_facts_append_nogil(bson_t *parent, const char *key, const AmongoAddress *a)
{
    bson_t doc, empty = BSON_INITIALIZER;
    bson_append_document_begin(parent, key, -1, &doc);
    bson_append_utf8(&doc, "h", 1, a->host, -1);
    bson_append_int32(&doc, "p", 1, a->port);
    bson_append_int64(&doc, "id", 2, 0);
    bson_append_utf8(&doc, "t", 1, "Unknown", -1);
    bson_append_int64(&doc, "rtt", 3, -1);
    bson_append_int64(&doc, "lu", 2, 0);
    bson_append_document(&doc, "hello", 5, &empty);
    bson_append_document_end(parent, &doc);
}

void
amongo_topology_facts_append_nogil(bson_t *parent, const char *key,
                                   const mongoc_topology_description_t *td,
                                   const AmongoAddress *members, size_t n_members)
{
    bson_t doc, servers;
    size_t n = 0;
    mongoc_server_description_t **sds = mongoc_topology_description_get_servers(td, &n);
    bson_append_document_begin(parent, key, -1, &doc);
    bson_append_utf8(&doc, "t", 1, mongoc_topology_description_type(td), -1);
    bson_append_array_begin(&doc, "s", 1, &servers);
    for (size_t i = 0; i < n; i++) {
        char index[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, index, sizeof index);
        amongo_server_facts_append_nogil(&servers, k, sds[i]);
    }
    size_t count = n;
    for (size_t m = 0; m < n_members; m++) {
        bool known = false;
        for (size_t i = 0; i < n && !known; i++) {
            mongoc_host_list_t *host = mongoc_server_description_host(sds[i]);
            known = host->port == members[m].port && !strcmp(host->host, members[m].host);
        }
        if (known)
            continue;
        char index[16];
        const char *k;
        bson_uint32_to_string((uint32_t)count++, &k, index, sizeof index);
        unknown_facts_append_nogil(&servers, k, &members[m]);
    }
    bson_append_array_end(&doc, &servers);
    bson_append_document_end(parent, &doc);
    mongoc_server_descriptions_destroy_all(sds, n);
}

/* ---- struct sequences (loop thread) ------------------------------------------------------- */

enum { SF_ADDRESS, SF_SERVER_ID, SF_TYPE, SF_RTT, SF_LAST_UPDATE, SF_HELLO, SF_FIELDS };

static PyStructSequence_Field server_fields[] = {
    {"address", "(host, port)"},
    {"server_id", "libmongoc's id of the server"},
    {"server_type", "libmongoc's name of its type: Standalone, Mongos, RSPrimary, ... Unknown"},
    {"round_trip_time_ms", "average round trip time in milliseconds, -1 if unknown"},
    {"last_update_us", "when it was last described, in microseconds of the monotonic clock"},
    {"hello", "its last hello reply (a dict, empty if it never answered)"},
    {NULL, NULL},
};

static PyStructSequence_Desc server_desc = {
    "asyncmongo._core.ServerFacts", "One server as libmongoc describes it.", server_fields, SF_FIELDS,
};

enum { TF_TYPE, TF_SERVERS, TF_FIELDS };

static PyStructSequence_Field topology_fields[] = {
    {"topology_type", "libmongoc's name: Unknown, Single, Sharded, ReplicaSetNoPrimary, ..."},
    {"servers", "a tuple of ServerFacts"},
    {NULL, NULL},
};

static PyStructSequence_Desc topology_desc = {
    "asyncmongo._core.TopologyFacts", "The deployment as libmongoc describes it.", topology_fields,
    TF_FIELDS,
};

int
amongo_topology_init_types(PyObject *module, AmongoState *st)
{
    st->ServerFactsType = (PyObject *)PyStructSequence_NewType(&server_desc);
    st->TopologyFactsType = (PyObject *)PyStructSequence_NewType(&topology_desc);
    if (!st->ServerFactsType || !st->TopologyFactsType)
        return -1;
    if (PyModule_AddObjectRef(module, "ServerFacts", st->ServerFactsType) < 0 ||
        PyModule_AddObjectRef(module, "TopologyFacts", st->TopologyFactsType) < 0)
        return -1;
    return 0;
}

/* NEW reference to doc[key], or NULL with KeyError. */
static PyObject *
item(PyObject *doc, const char *key)
{
    PyObject *v = PyDict_Check(doc) ? PyDict_GetItemString(doc, key) : NULL;
    if (!v) {
        PyErr_Format(PyExc_KeyError, "asyncmongo: facts document without %s", key);
        return NULL;
    }
    return Py_NewRef(v);
}

/* NEW: a struct sequence of type `tp` from `values` (stolen, each may be NULL after an error). */
static PyObject *
struct_from(PyObject *tp, PyObject **values, int n)
{
    PyObject *seq = PyStructSequence_New((PyTypeObject *)tp);
    bool ok = seq != NULL;
    for (int i = 0; i < n; i++) {
        ok = ok && values[i];
        if (seq)
            PyStructSequence_SET_ITEM(seq, i, values[i] ? values[i] : Py_NewRef(Py_None));
        else
            Py_XDECREF(values[i]);
    }
    if (!ok)
        Py_CLEAR(seq);
    return seq;
}

static PyObject *
server_facts_py(AmongoState *st, PyObject *doc)
{
    PyObject *host = item(doc, "h"), *port = host ? item(doc, "p") : NULL;
    PyObject *address = port ? PyTuple_Pack(2, host, port) : NULL;
    Py_XDECREF(host);
    Py_XDECREF(port);
    PyObject *values[SF_FIELDS] = {
        address,
        address ? item(doc, "id") : NULL,
        address ? item(doc, "t") : NULL,
        address ? item(doc, "rtt") : NULL,
        address ? item(doc, "lu") : NULL,
        address ? item(doc, "hello") : NULL,
    };
    return struct_from(st->ServerFactsType, values, SF_FIELDS);
}

static PyObject *
topology_facts_py(AmongoState *st, PyObject *doc)
{
    PyObject *list = item(doc, "s");
    PyObject *servers = list ? PyTuple_New(PyList_GET_SIZE(list)) : NULL;
    for (Py_ssize_t i = 0; servers && i < PyList_GET_SIZE(list); i++) {
        PyObject *facts = server_facts_py(st, PyList_GET_ITEM(list, i));
        if (!facts)
            Py_CLEAR(servers);
        else
            PyTuple_SET_ITEM(servers, i, facts);
    }
    Py_XDECREF(list);
    PyObject *values[TF_FIELDS] = {servers ? item(doc, "t") : NULL, servers};
    return struct_from(st->TopologyFactsType, values, TF_FIELDS);
}

/* NEW: the ServerFacts or TopologyFacts of a decoded facts document (a topology has servers). */
PyObject *
amongo_facts_py(AmongoState *st, PyObject *doc)
{
    if (PyDict_Check(doc) && PyDict_GetItemString(doc, "s"))
        return topology_facts_py(st, doc);
    return server_facts_py(st, doc);
}

/* ---- server selection (AMONGO_OP_SELECT_SERVER) ------------------------------------------- */

/* On a worker: select a writable server, or one for the job's read preference (waiting up to
 * serverSelectionTimeoutMS, as libmongoc does); the reply is {s: its facts}. */
void
amongo_job_run_select_nogil(AmongoJob *job, mongoc_client_t *client)
{
    mongoc_read_prefs_t *prefs = NULL;
    if (job->read_prefs_len) {
        bson_t doc;
        if (bson_init_static(&doc, job->read_prefs, job->read_prefs_len))
            prefs = amongo_read_prefs_nogil(&doc);
    }
    mongoc_server_description_t *sd =
        mongoc_client_select_server(client, prefs == NULL, prefs, &job->error);
    if (prefs)
        mongoc_read_prefs_destroy(prefs);
    if (!sd) {
        job->ok = false;
        return;
    }
    bson_init(&job->reply);
    amongo_job_keep_reply_nogil(job);
    amongo_server_facts_append_nogil(&job->reply, "s", sd);
    mongoc_server_description_destroy(sd);
    job->ok = true;
}

/* NEW: the ServerFacts of a finished AMONGO_OP_SELECT_SERVER job, or NULL with an exception. */
PyObject *
amongo_select_result(AmongoState *st, AmongoJob *job)
{
    PyObject *view = PyMemoryView_FromMemory((char *)bson_get_data(&job->reply), job->reply.len,
                                             PyBUF_READ);
    PyObject *doc = view ? PyObject_CallFunctionObjArgs(st->bson_to_dict, view,
                                                         st->default_codec_options, NULL)
                         : NULL;
    Py_XDECREF(view);
    PyObject *server = doc ? item(doc, "s") : NULL;
    Py_XDECREF(doc);
    PyObject *facts = server ? server_facts_py(st, server) : NULL;
    Py_XDECREF(server);
    return facts;
}
