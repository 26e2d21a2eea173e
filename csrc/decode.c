/* decode.c: BSON bytes to Python objects, exactly as PyMongo's bson.decode / bson.decode_all give them
 * (same classes, same key order, same exception and wording), straight from the caller's buffer.
 * It follows bson's checks in bson's order, but never reads past the container it is in: where bson's
 * array bound is looser it errs at the element instead of after it. It must never crash on any input.
 * Speed comes from a cache of key strings, one switch per element, and common objects built in C. */
#include "codec.h"

#include <datetime.h>

int
amongo_decode_init(void)
{
    PyDateTime_IMPORT;
    return PyDateTimeAPI ? 0 : -1;
}

/* ---- key cache: documents of one batch repeat their keys, so ASCII keys up to KC_MAXLEN bytes are
 * kept in a direct-mapped table of str objects (shared: str is immutable, and its hash is then
 * computed once for every dict it goes into). Keys are decoded the same whatever the error handler,
 * since only ASCII keys are cached. */
#define KC_SIZE 1024
#define KC_MAXLEN 48
#define KC_CAPSULE "asyncmongo._core.key_cache"

typedef struct {
    PyObject *s;
    size_t len;
} KeyEntry;

typedef struct {
    KeyEntry e[KC_SIZE];
} KeyCache;

void *
amongo_decode_key_cache_new(void)
{
    void *kc = calloc(1, sizeof(KeyCache));
    if (!kc)
        PyErr_NoMemory();
    return kc;
}

void
amongo_decode_key_cache_free(PyObject *capsule)
{
    KeyCache *kc = PyCapsule_GetPointer(capsule, KC_CAPSULE);
    if (!kc) {
        PyErr_Clear();
        return;
    }
    for (size_t i = 0; i < KC_SIZE; i++)
        Py_XDECREF(kc->e[i].s);
    free(kc);
}

/* ---- one decode call ---- */
typedef struct {
    AmongoState *st;
    const AmongoCodecOpts *o;
    KeyCache *keys;
    PyObject *owner;      /* a bytes object holding the data (RawBSONDocument views), or NULL */
    int depth;            /* containers entered: the C stack guard */
    const uint8_t *end;   /* end of the top-level document: no read goes past it */
    PyObject **stack;     /* scratch stack (PyMem), owned references in [0, top) */
    size_t top, cap;
    bool bounds_ready;    /* min_ms/max_ms computed (DATETIME_CLAMP / DATETIME_AUTO) */
    int64_t min_ms, max_ms;
} Dec;

static inline uint32_t
rd_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return BSON_UINT32_FROM_LE(v);
}

static inline int64_t
rd_i64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)BSON_UINT64_FROM_LE(v);
}

static void
invalid_bson(Dec *d, const char *msg)
{
    PyErr_SetString(d->st->codec_InvalidBSON, msg);
}

/* bson's _rewrap_as_invalid_bson (3.11 branch): any Exception that is not an InvalidBSON becomes
 * InvalidBSON(str(exc)), keeping the traceback; other BaseExceptions pass. */
static void
rewrap_invalid_bson(Dec *d)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t && PyErr_GivenExceptionMatches(t, PyExc_Exception) &&
        !PyErr_GivenExceptionMatches(t, d->st->codec_InvalidBSON)) {
        Py_DECREF(t);
        t = Py_NewRef(d->st->codec_InvalidBSON);
        if (v) {
            PyObject *msg = PyObject_Str(v);
            if (!msg)
                PyErr_Clear();
            Py_DECREF(v);
            v = msg;
        }
        PyErr_NormalizeException(&t, &v, &tb);
    }
    PyErr_Restore(t, v, tb);
}

static inline uint64_t
load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Hash and ASCII test of a key in a few word operations: keys up to 16 bytes are read as two
 * overlapping words, longer ones word by word (all within the key's own bytes). */
static inline bool
key_hash_ascii(const uint8_t *p, size_t n, uint64_t *hash)
{
    uint64_t h, high;
    if (n >= 8) {
        uint64_t a = load64(p), b = load64(p + n - 8);
        h = a * 0x9E3779B97F4A7C15ull ^ b;
        high = a | b;
        for (size_t i = 8; i + 8 < n; i += 8) {
            uint64_t w = load64(p + i);
            h = (h ^ w) * 0x9E3779B97F4A7C15ull;
            high |= w;
        }
    } else if (n >= 4) {
        /* Two overlapping 4-byte loads (a byte-wise copy into a word would stall the load). */
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + n - 4, 4);
        h = high = lo | (uint64_t)hi << 32;
    } else {
        h = high = n ? (uint64_t)p[0] | (uint64_t)p[n / 2] << 8 | (uint64_t)p[n - 1] << 16 : 0;
    }
    h = (h ^ n) * 0xFF51AFD7ED558CCDull;
    *hash = h ^ (h >> 29);
    return (high & 0x8080808080808080ull) == 0;
}

static inline bool
same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8)
            if (load64(a + i) != load64(b + i))
                return false;
        return load64(a + n - 8) == load64(b + n - 8);
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static PyObject *
dec_key(Dec *d, const uint8_t *p, size_t n)
{
    uint64_t h;
    if (n <= KC_MAXLEN && key_hash_ascii(p, n, &h)) {
        KeyEntry *e = &d->keys->e[h & (KC_SIZE - 1)];
        if (e->s && e->len == n && same_bytes(PyUnicode_1BYTE_DATA(e->s), p, n))
            return Py_NewRef(e->s);
        PyObject *s = PyUnicode_New((Py_ssize_t)n, 127);
        if (!s)
            return NULL;
        memcpy(PyUnicode_1BYTE_DATA(s), p, n);
        PyObject *old = e->s;
        e->s = Py_NewRef(s);
        e->len = n;
        Py_XDECREF(old);
        return s;
    }
    return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, d->o->errors);
}

/* Length of the NUL-terminated key at k, or rem if no NUL comes within rem bytes: a word at a time
 * (keys are short, and a libc call per key costs more than the scan). */
static inline size_t
key_len(const uint8_t *k, size_t rem)
{
    size_t i = 0;
#if BSON_BYTE_ORDER == BSON_LITTLE_ENDIAN
    for (; i + 8 <= rem; i += 8) {
        uint64_t w = load64(k + i);
        uint64_t z = (w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull;
        if (z)
            return i + ((size_t)__builtin_ctzll(z) >> 3); /* the lowest flagged byte is exact */
    }
#endif
    while (i < rem && k[i])
        i++;
    return i;
}

/* The scratch stack of one call: a document's (key, value) pairs or an array's items wait here
 * until the container is built at its final size; nested containers push above their parent's. */
static int
scratch_push(Dec *d, PyObject *o)
{
    if (d->top == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        PyObject **stack = PyMem_Realloc(d->stack, cap * sizeof(PyObject *));
        if (!stack) {
            PyErr_NoMemory();
            return -1;
        }
        d->stack = stack;
        d->cap = cap;
    }
    d->stack[d->top++] = o;
    return 0;
}

static void
scratch_drop(Dec *d, size_t base)
{
    while (d->top > base)
        Py_DECREF(d->stack[--d->top]);
}

static PyObject *dec_document(Dec *d, const uint8_t *p, uint32_t size, bool *dollar);
static PyObject *dec_value(Dec *d, PyObject *name, const uint8_t *p, size_t lim, uint8_t type,
                           size_t *used);

static int
enter(Dec *d, const char *where)
{
    if (Py_EnterRecursiveCall(where))
        return -1;
    if (++d->depth > AMONGO_CODEC_MAX_DEPTH) {
        d->depth--;
        Py_LeaveRecursiveCall();
        PyErr_Format(PyExc_RecursionError, "maximum recursion depth exceeded%s", where);
        return -1;
    }
    return 0;
}

static void
leave(Dec *d)
{
    d->depth--;
    Py_LeaveRecursiveCall();
}

/* RawBSONDocument(bytes_or_view, codec_options), with bson's choice of bytes: the owner itself when
 * the document is all of it, a read-only view of it from the view threshold up, else a copy. */
static PyObject *
dec_raw(Dec *d, const uint8_t *p, uint32_t size)
{
    PyObject *raw;
    if (d->owner) {
        Py_ssize_t off = (const char *)p - PyBytes_AS_STRING(d->owner);
        if (off == 0 && (Py_ssize_t)size == PyBytes_GET_SIZE(d->owner)) {
            raw = Py_NewRef(d->owner);
        } else if ((Py_ssize_t)size >= amongo_codec_raw_view_threshold) {
            PyObject *view = PyMemoryView_FromObject(d->owner);
            if (!view)
                return NULL;
            raw = PySequence_GetSlice(view, off, off + (Py_ssize_t)size);
            Py_DECREF(view);
        } else {
            raw = PyBytes_FromStringAndSize((const char *)p, size);
        }
    } else {
        raw = PyBytes_FromStringAndSize((const char *)p, size);
    }
    if (!raw)
        return NULL;
    PyObject *args[2] = {raw, d->o->options};
    PyObject *doc = PyObject_Vectorcall(d->o->document_class, args, 2, NULL);
    Py_DECREF(raw);
    return doc;
}

/* The elements of a document (bson's _elements_to_dict). s: after the length; max: bytes before
 * the terminating NUL, which the caller has checked is there. Errors are not rewrapped here (bson
 * leaves a document_class failure as it is at the top level). For a dict, the pairs wait on the
 * scratch stack and go into a dict made at its final size (inserting them in order gives the dict
 * bson builds: same order, the last of duplicate keys winning); other classes get __setitem__ per
 * element, in bson's order. */
static PyObject *
dec_elements(Dec *d, const uint8_t *s, size_t max, bool *dollar)
{
    const AmongoCodecOpts *o = d->o;
    PyObject *doc = NULL;
    size_t base = d->top;
    if (!o->dict_class && !(doc = PyObject_CallNoArgs(o->document_class)))
        return NULL;
    size_t pos = 0;
    while (pos < max) {
        uint8_t type = s[pos++];
        const uint8_t *k = s + pos;
        size_t rem = max - pos;
        size_t klen = key_len(k, rem);
        if (klen == rem) {
            invalid_bson(d, "field name too large");
            goto fail;
        }
        PyObject *name = dec_key(d, k, klen);
        if (!name) {
            rewrap_invalid_bson(d);
            goto fail;
        }
        if (klen > 2 && k[0] == '$')
            *dollar = true;
        pos += klen + 1;
        size_t used;
        PyObject *value = dec_value(d, name, s + pos, max - pos, type, &used);
        if (!value) {
            Py_DECREF(name);
            goto fail;
        }
        pos += used;
        if (o->dict_class) {
            if (scratch_push(d, name) < 0) {
                Py_DECREF(name);
                Py_DECREF(value);
                goto fail;
            }
            if (scratch_push(d, value) < 0) {
                Py_DECREF(value);
                goto fail;
            }
        } else {
            int rc = PyObject_SetItem(doc, name, value);
            Py_DECREF(name);
            Py_DECREF(value);
            if (rc < 0)
                goto fail;
        }
    }
    if (o->dict_class) {
        size_t n = (d->top - base) / 2;
        doc = n > 5 ? _PyDict_NewPresized((Py_ssize_t)n) : PyDict_New();
        if (!doc)
            goto fail;
        for (size_t i = base; i < d->top; i += 2)
            if (PyDict_SetItem(doc, d->stack[i], d->stack[i + 1]) < 0)
                goto fail;
        scratch_drop(d, base);
    }
    return doc;
fail:
    scratch_drop(d, base);
    Py_XDECREF(doc);
    return NULL;
}

/* bson's elements_to_dict: p at the length prefix; size checked >= 5 with a NUL at p[size - 1]. */
static PyObject *
dec_document(Dec *d, const uint8_t *p, uint32_t size, bool *dollar)
{
    if (d->o->raw_class)
        return dec_raw(d, p, size);
    if (enter(d, " while decoding a BSON document") < 0)
        return NULL;
    PyObject *doc = dec_elements(d, p + 4, size - 5, dollar);
    leave(d);
    return doc;
}

/* bson's _dbref_hook: a subdocument with $ref (a str) and $id becomes DBRef(ref, id, $db, rest).
 * STEALS value. */
static PyObject *
dbref_hook(Dec *d, PyObject *value, bool dollar)
{
    AmongoState *st = d->st;
    PyObject *ref = NULL, *id = NULL, *db = NULL, *ret = NULL;
    int db_present = 0;
    if (d->o->dict_class) {
        /* dict: has-key is get-item, and only a document with a "$..." key can have them. */
        if (!dollar)
            return value;
        ref = PyDict_GetItemWithError(value, st->codec_s_dollar_ref);
        if (!ref && PyErr_Occurred())
            goto fail;
        id = ref ? PyDict_GetItemWithError(value, st->codec_s_dollar_id) : NULL;
        if (!id) {
            if (PyErr_Occurred())
                goto fail;
            return value;
        }
        db = PyDict_GetItemWithError(value, st->codec_s_dollar_db);
        if (!db && PyErr_Occurred())
            goto fail;
        db_present = db != NULL;
        Py_INCREF(ref);
        Py_INCREF(id);
        db = db ? Py_NewRef(db) : Py_NewRef(Py_None);
    } else {
        if (!PyMapping_HasKey(value, st->codec_s_dollar_ref) ||
            !PyMapping_HasKey(value, st->codec_s_dollar_id))
            return value;
        if (!(ref = PyObject_GetItem(value, st->codec_s_dollar_ref)) ||
            !(id = PyObject_GetItem(value, st->codec_s_dollar_id)))
            goto fail;
        if (PyMapping_HasKey(value, st->codec_s_dollar_db)) {
            if (!(db = PyObject_GetItem(value, st->codec_s_dollar_db)))
                goto fail;
            db_present = 1;
        } else {
            db = Py_NewRef(Py_None);
        }
    }
    if (!(PyUnicode_Check(ref) && (db == Py_None || PyUnicode_Check(db)))) {
        ret = value;
        value = NULL;
        goto done;
    }
    /* bson ignores these results; deleting keys we just read from a mapping. */
    if (PyMapping_DelItem(value, st->codec_s_dollar_ref) < 0 ||
        PyMapping_DelItem(value, st->codec_s_dollar_id) < 0 ||
        (db_present && PyMapping_DelItem(value, st->codec_s_dollar_db) < 0))
        PyErr_Clear();
    PyObject *args[4] = {ref, id, db, value};
    ret = PyObject_Vectorcall(st->codec_DBRef, args, 4, NULL);
    goto done;
fail:
    ret = NULL;
done:
    Py_XDECREF(value);
    Py_XDECREF(ref);
    Py_XDECREF(id);
    Py_XDECREF(db);
    return ret;
}

/* ---- datetimes ---- */

static const char DT_HINT[] =
    " (Consider Using CodecOptions(datetime_conversion=DATETIME_AUTO) or "
    "MongoClient(datetime_conversion='DATETIME_AUTO')). See: "
    "https://www.mongodb.com/docs/languages/python/pymongo-driver/current/data-formats/"
    "dates-and-times/#handling-out-of-range-datetimes";

static PyObject *
datetime_ms(Dec *d, int64_t millis)
{
    PyObject *v = PyLong_FromLongLong(millis);
    if (!v)
        return NULL;
    PyObject *r = PyObject_CallOneArg(d->st->codec_DatetimeMS, v);
    Py_DECREF(v);
    return r;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days). */
static void
civil_from_days(int64_t z, int64_t *y, int *m, int *day)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* bson's datetime_from_millis, with its arithmetic: millis - diff wraps at the int64 ends as it does
 * there (so INT64_MIN reports the same year), and a year outside 1..9999 is datetime's ValueError,
 * worded as bson words it and then rewrapped by the caller. */
static PyObject *
datetime_from_millis(Dec *d, int64_t millis, PyObject *tz)
{
    int diff = (int)(((millis % 1000) + 1000) % 1000);
    int64_t seconds = (int64_t)((uint64_t)millis - (uint64_t)diff) / 1000;
    int64_t days = seconds / 86400, sod = seconds % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t year;
    int month, day;
    civil_from_days(days, &year, &month, &day);
    if (year < 1 || year > 9999) {
        PyErr_Format(PyExc_ValueError, "year %i is out of range%s", (int)year, DT_HINT);
        return NULL;
    }
    (void)d;
    return PyDateTimeAPI->DateTime_FromDateAndTime((int)year, month, day, (int)(sod / 3600),
                                                   (int)(sod / 60 % 60), (int)(sod % 60),
                                                   diff * 1000, tz, PyDateTimeAPI->DateTimeType);
}

static int
utc_offset_ms(Dec *d, PyObject *at, int64_t *out)
{
    PyObject *args[2] = {d->o->tzinfo, at};
    PyObject *off = PyObject_VectorcallMethod(d->st->codec_s_utcoffset, args, 2, NULL);
    if (!off)
        return -1;
    *out = 0;
    if (off != Py_None) {
        if (!PyDelta_Check(off)) {
            PyErr_SetString(d->st->codec_BSONError,
                            "tzinfo.utcoffset() did not return a datetime.timedelta");
            Py_DECREF(off);
            return -1;
        }
        *out = (PyDateTime_DELTA_GET_DAYS(off) * (int64_t)86400 + PyDateTime_DELTA_GET_SECONDS(off)) *
                   (int64_t)1000 +
               PyDateTime_DELTA_GET_MICROSECONDS(off) / 1000;
    }
    Py_DECREF(off);
    return 0;
}

/* The range a datetime can take under this tzinfo: computed once per call (bson asks per value). */
static int
dt_bounds(Dec *d)
{
    if (d->bounds_ready)
        return 0;
    int64_t lo = amongo_codec_min_millis, hi = amongo_codec_max_millis, off_lo = 0, off_hi = 0;
    if (d->o->tz_aware && d->o->tzinfo != Py_None) {
        if (utc_offset_ms(d, d->st->codec_min_datetime, &off_lo) < 0 ||
            utc_offset_ms(d, d->st->codec_max_datetime, &off_hi) < 0)
            return -1;
    }
    if (off_lo < 0)
        lo -= off_lo;
    if (off_hi > 0)
        hi -= off_hi;
    d->min_ms = lo;
    d->max_ms = hi;
    d->bounds_ready = true;
    return 0;
}

static PyObject *
dec_datetime(Dec *d, int64_t millis)
{
    const AmongoCodecOpts *o = d->o;
    if (o->dt_conv == AMONGO_DT_MS)
        return datetime_ms(d, millis);
    if (o->dt_conv == AMONGO_DT_CLAMP || o->dt_conv == AMONGO_DT_AUTO) {
        if (dt_bounds(d) < 0)
            return NULL;
        if (millis < d->min_ms || millis > d->max_ms) {
            if (o->dt_conv == AMONGO_DT_AUTO)
                return datetime_ms(d, millis);
            millis = millis < d->min_ms ? d->min_ms : d->max_ms;
        }
    }
    /* naive.replace(tzinfo=utc) is the same datetime built with utc. */
    PyObject *value = datetime_from_millis(d, millis, o->tz_aware ? d->st->codec_utc : Py_None);
    if (!value || !o->tz_aware || o->tzinfo == Py_None)
        return value;
    PyObject *args[2] = {value, o->tzinfo};
    PyObject *local = PyObject_VectorcallMethod(d->st->codec_s_astimezone, args, 2, NULL);
    Py_DECREF(value);
    return local;
}

/* ---- other values ---- */

static PyObject *
new_objectid(Dec *d, const uint8_t *p)
{
    /* ObjectId(b) stores b, a 12-byte bytes, in its one slot: done here without the Python call. */
    PyTypeObject *tp = (PyTypeObject *)d->st->codec_ObjectId;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, 12);
    if (!raw)
        return NULL;
    PyObject *oid = tp->tp_alloc(tp, 0);
    if (!oid) {
        Py_DECREF(raw);
        return NULL;
    }
    *amongo_codec_slot(oid, d->st->codec_oid_slot) = raw;
    return oid;
}

static PyObject *
new_uuid(Dec *d, const uint8_t *p)
{
    /* uuid.UUID(bytes=b) sets int = int.from_bytes(b, 'big') and is_safe = SafeUUID.unknown. */
    PyTypeObject *tp = (PyTypeObject *)d->st->codec_UUID;
    PyObject *n = _PyLong_FromByteArray(p, 16, 0, 0);
    if (!n)
        return NULL;
    PyObject *u = tp->tp_alloc(tp, 0);
    if (!u) {
        Py_DECREF(n);
        return NULL;
    }
    *amongo_codec_slot(u, d->st->codec_uuid_int_slot) = n;
    *amongo_codec_slot(u, d->st->codec_uuid_safe_slot) = Py_NewRef(d->st->codec_SafeUUID_unknown);
    return u;
}

static PyObject *
call2(PyObject *callable, PyObject *a, PyObject *b)
{
    /* STEALS a and b (either may be NULL after a failed allocation). */
    PyObject *r = NULL;
    if (a && b) {
        PyObject *args[2] = {a, b};
        r = PyObject_Vectorcall(callable, args, 2, NULL);
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    return r;
}

static PyObject *
dec_binary(Dec *d, const uint8_t *p, size_t lim, size_t *used)
{
    if (lim < 5)
        return NULL;
    uint32_t length = rd_u32(p);
    if (lim - 5 < length)
        return NULL;
    uint8_t subtype = p[4];
    const uint8_t *data = p + 5;
    *used = 5 + (size_t)length;
    if (subtype == 2) {
        if (length < 4 || rd_u32(data) != length - 4)
            return NULL;
    }
    if (subtype == 0)
        return PyBytes_FromStringAndSize((const char *)data, length);
    int rep = d->o->uuid_rep;
    if (subtype == 4 && rep == AMONGO_UUID_STANDARD && length == 16)
        return new_uuid(d, data);
    PyObject *bytes = subtype == 2 ? PyBytes_FromStringAndSize((const char *)data + 4, length - 4)
                                   : PyBytes_FromStringAndSize((const char *)data, length);
    PyObject *bin = call2(d->st->codec_Binary, bytes, PyLong_FromLong(subtype));
    if (!bin || !(subtype == 3 || subtype == 4))
        return bin;
    if (rep == AMONGO_UUID_UNSPECIFIED || (subtype == 4 && rep != AMONGO_UUID_STANDARD) ||
        (subtype == 3 && rep == AMONGO_UUID_STANDARD))
        return bin;
    PyObject *rep_obj = PyLong_FromLong(rep);
    if (!rep_obj) {
        Py_DECREF(bin);
        return NULL;
    }
    PyObject *args[2] = {bin, rep_obj};
    PyObject *u = PyObject_VectorcallMethod(d->st->codec_s_as_uuid, args, 2, NULL);
    Py_DECREF(rep_obj);
    Py_DECREF(bin);
    return u;
}

/* A length-prefixed string (types 2, 13, 14): NULL without an exception when malformed. */
static PyObject *
dec_string(Dec *d, const uint8_t *p, size_t lim, size_t *used)
{
    if (lim < 4)
        return NULL;
    uint32_t n = rd_u32(p);
    if (!n || lim < (size_t)n + 4 || p[4 + n - 1])
        return NULL;
    *used = 4 + (size_t)n;
    return PyUnicode_DecodeUTF8((const char *)p + 4, (Py_ssize_t)n - 1, d->o->errors);
}

static PyObject *
dec_array(Dec *d, PyObject *name, const uint8_t *p, size_t lim, size_t *used)
{
    if (lim < 4)
        return NULL;
    uint32_t size = rd_u32(p);
    if (size < 5 || lim < size)
        return NULL;
    size_t end = size - 1;
    if (p[end])
        return NULL;
    size_t base = d->top;
    size_t pos = 4;
    while (pos < end) {
        uint8_t type = p[pos++];
        size_t klen = key_len(p + pos, end - pos); /* p[end] is NUL */
        pos += klen + 1;
        /* bson gives every element the array's own limit less the key, not what is left of the
         * array: an element may run past the array's end, into its parent, and bson reports what
         * it finds there (the array is refused afterwards, its end being missed). The same limit
         * here, clamped to the end of the top-level document, where bson would read past the
         * input. */
        size_t vlim = lim - klen, left = (size_t)(d->end - (p + pos));
        if (vlim > left)
            vlim = left;
        if (enter(d, " while decoding a list value") < 0)
            goto fail;
        size_t vused = 0;
        PyObject *item = dec_value(d, name, p + pos, vlim, type, &vused);
        leave(d);
        if (!item)
            goto fail;
        pos += vused;
        if (scratch_push(d, item) < 0) {
            Py_DECREF(item);
            goto fail;
        }
    }
    if (pos != end)
        goto fail;
    PyObject *list = PyList_New((Py_ssize_t)(d->top - base));
    if (!list)
        goto fail;
    /* The list takes the scratch references over. */
    for (size_t i = base; i < d->top; i++)
        PyList_SET_ITEM(list, (Py_ssize_t)(i - base), d->stack[i]);
    d->top = base;
    *used = size;
    return list;
fail:
    scratch_drop(d, base);
    return NULL;
}

static PyObject *
dec_regex(Dec *d, const uint8_t *p, size_t lim, size_t *used)
{
    const uint8_t *pnul = memchr(p, 0, lim);
    if (!pnul)
        return NULL;
    size_t plen = (size_t)(pnul - p);
    PyObject *pattern = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)plen, d->o->errors);
    if (!pattern)
        return NULL;
    const uint8_t *f = pnul + 1;
    const uint8_t *fnul = memchr(f, 0, lim - plen - 1);
    if (!fnul) {
        Py_DECREF(pattern);
        return NULL;
    }
    size_t flen = (size_t)(fnul - f);
    PyObject *fstr = PyUnicode_DecodeUTF8((const char *)f, (Py_ssize_t)flen, d->o->errors);
    if (!fstr) {
        Py_DECREF(pattern);
        return NULL;
    }
    Py_DECREF(fstr);
    long flags = 0;
    for (size_t i = 0; i < flen; i++) {
        switch (f[i]) {
        case 'i': flags |= 2; break;
        case 'l': flags |= 4; break;
        case 'm': flags |= 8; break;
        case 's': flags |= 16; break;
        case 'u': flags |= 32; break;
        case 'x': flags |= 64; break;
        }
    }
    *used = plen + 1 + flen + 1;
    return call2(d->st->codec_Regex, pattern, PyLong_FromLong(flags));
}

static PyObject *
dec_code_w_scope(Dec *d, const uint8_t *p, size_t lim, size_t *used)
{
    /* bson's checks, with its uint32 arithmetic (the wrap cases are caught by the other tests). */
    if (lim < 8)
        return NULL;
    uint32_t total = rd_u32(p);
    if (lim < total)
        return NULL;
    uint32_t code_size = rd_u32(p + 4);
    uint32_t len = 4 + 4 + code_size + 4;
    if (!code_size || lim < code_size || lim < len || len < code_size)
        return NULL;
    const uint8_t *c = p + 8;
    if (c[code_size - 1])
        return NULL;
    PyObject *code = PyUnicode_DecodeUTF8((const char *)c, (Py_ssize_t)code_size - 1, d->o->errors);
    if (!code)
        return NULL;
    const uint8_t *s = c + code_size;
    uint32_t scope_size = rd_u32(s);
    len = 4 + 4 + code_size + scope_size;
    if (scope_size < 5 || len != total || len < scope_size || s[scope_size - 1]) {
        Py_DECREF(code);
        return NULL;
    }
    bool dollar = false;
    PyObject *scope = dec_document(d, s, scope_size, &dollar);
    if (!scope) {
        Py_DECREF(code);
        return NULL;
    }
    *used = total;
    return call2(d->st->codec_Code, code, scope);
}

static PyObject *
dec_dbpointer(Dec *d, const uint8_t *p, size_t lim, size_t *used)
{
    if (lim < 4)
        return NULL;
    uint32_t n = rd_u32(p);
    if (!n || lim < (size_t)n + 16 || p[4 + n - 1])
        return NULL;
    PyObject *coll = PyUnicode_DecodeUTF8((const char *)p + 4, (Py_ssize_t)n - 1, d->o->errors);
    if (!coll)
        return NULL;
    PyObject *oid = new_objectid(d, p + 4 + n);
    *used = 4 + (size_t)n + 12;
    return call2(d->st->codec_DBRef, coll, oid);
}

static void
unknown_type(Dec *d, PyObject *name, uint8_t type)
{
    PyObject *b = PyBytes_FromStringAndSize((const char *)&type, 1);
    if (!b)
        return;
    PyObject *repr = PyObject_Repr(b);
    Py_DECREF(b);
    if (!repr)
        return;
    PyObject *msg = PyUnicode_FromFormat(
        "Detected unknown BSON type %U for fieldname '%U'. Are you using the latest driver version?",
        repr, name);
    Py_DECREF(repr);
    if (msg) {
        PyErr_SetObject(d->st->codec_InvalidBSON, msg);
        Py_DECREF(msg);
    }
}

/* One value (bson's get_value): p at the value, lim the bytes it may use. Every failure ends as
 * bson's does: an exception rewrapped as InvalidBSON, or "invalid length or type code". */
static PyObject *
dec_value(Dec *d, PyObject *name, const uint8_t *p, size_t lim, uint8_t type, size_t *used)
{
    AmongoState *st = d->st;
    PyObject *v = NULL;
    *used = 0;
    switch (type) {
    case 0x01:
        if (lim < 8)
            break;
        {
            uint64_t bits;
            double x;
            memcpy(&bits, p, 8);
            bits = BSON_UINT64_FROM_LE(bits);
            memcpy(&x, &bits, 8);
            *used = 8;
            v = PyFloat_FromDouble(x);
        }
        break;
    case 0x02:
    case 0x0E:
        v = dec_string(d, p, lim, used);
        break;
    case 0x03: {
        if (lim < 4)
            break;
        uint32_t size = rd_u32(p);
        if (size < 5 || lim < size || p[size - 1])
            break;
        bool dollar = false;
        v = dec_document(d, p, size, &dollar);
        if (v && !d->o->raw_class)
            v = dbref_hook(d, v, dollar);
        *used = size;
        break;
    }
    case 0x04:
        v = dec_array(d, name, p, lim, used);
        break;
    case 0x05:
        v = dec_binary(d, p, lim, used);
        break;
    case 0x06:
    case 0x0A:
        return Py_NewRef(Py_None);
    case 0x07:
        if (lim < 12)
            break;
        *used = 12;
        v = new_objectid(d, p);
        break;
    case 0x08:
        if (lim < 1)
            break;
        if (p[0] > 1) {
            /* bson formats the byte as a signed char: 0x80 reads "ffffff80" */
            PyErr_Format(st->codec_InvalidBSON, "invalid boolean value: %x", (int)(signed char)p[0]);
            return NULL;
        }
        *used = 1;
        return Py_NewRef(p[0] ? Py_True : Py_False);
    case 0x09:
        if (lim < 8)
            break;
        *used = 8;
        v = dec_datetime(d, rd_i64(p));
        break;
    case 0x0B:
        v = dec_regex(d, p, lim, used);
        break;
    case 0x0C:
        v = dec_dbpointer(d, p, lim, used);
        break;
    case 0x0D: {
        PyObject *code = dec_string(d, p, lim, used);
        if (code) {
            v = PyObject_CallOneArg(st->codec_Code, code);
            Py_DECREF(code);
        }
        break;
    }
    case 0x0F:
        v = dec_code_w_scope(d, p, lim, used);
        break;
    case 0x10:
        if (lim < 4)
            break;
        *used = 4;
        v = PyLong_FromLong((int32_t)rd_u32(p));
        break;
    case 0x11:
        if (lim < 8)
            break;
        *used = 8;
        v = call2(st->codec_Timestamp, PyLong_FromUnsignedLong(rd_u32(p + 4)),
                  PyLong_FromUnsignedLong(rd_u32(p)));
        break;
    case 0x12: {
        if (lim < 8)
            break;
        *used = 8;
        PyObject *n = PyLong_FromLongLong(rd_i64(p));
        if (n) {
            v = PyObject_CallOneArg(st->codec_Int64, n);
            Py_DECREF(n);
        }
        break;
    }
    case 0x13: {
        if (lim < 16)
            break;
        *used = 16;
        PyObject *b = PyBytes_FromStringAndSize((const char *)p, 16);
        if (b) {
            PyObject *args[2] = {st->codec_Decimal128, b};
            v = PyObject_VectorcallMethod(st->codec_s_from_bid, args, 2, NULL);
            Py_DECREF(b);
        }
        break;
    }
    case 0xFF:
        v = PyObject_CallNoArgs(st->codec_MinKey);
        break;
    case 0x7F:
        v = PyObject_CallNoArgs(st->codec_MaxKey);
        break;
    default:
        unknown_type(d, name, type);
        break;
    }
    if (v)
        return v;
    if (PyErr_Occurred())
        rewrap_invalid_bson(d);
    else
        invalid_bson(d, "invalid length or type code");
    return NULL;
}

/* ---- entry points ---- */

/* bson's _contains_view_eligible_doc: a well-framed document of the view threshold or more. */
static bool
has_view_eligible_doc(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    while (len - pos >= 4) {
        int32_t size = (int32_t)rd_u32(p + pos);
        if (size < 5 || (size_t)size > len - pos)
            return false;
        if ((Py_ssize_t)size >= amongo_codec_raw_view_threshold)
            return true;
        pos += (size_t)size;
    }
    return false;
}

static PyObject *
decode_frames(Dec *d, const uint8_t *p, size_t len, bool all)
{
    if (!all) {
        if (len < 5) {
            invalid_bson(d, "not enough data for a BSON document");
            return NULL;
        }
        int32_t size = (int32_t)rd_u32(p);
        if (size < 5) {
            invalid_bson(d, "invalid message size");
            return NULL;
        }
        if (len < (size_t)size || len > INT32_MAX) {
            invalid_bson(d, "objsize too large");
            return NULL;
        }
        if ((size_t)size != len || p[size - 1]) {
            invalid_bson(d, "bad eoo");
            return NULL;
        }
        bool dollar = false;
        d->end = p + size;
        return dec_document(d, p, (uint32_t)size, &dollar);
    }
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    while (len > 0) {
        const char *err = NULL;
        int32_t size = 0;
        if (len < 5)
            err = "not enough data for a BSON document";
        else if ((size = (int32_t)rd_u32(p)) < 5)
            err = "invalid message size";
        else if (len < (size_t)size)
            err = "objsize too large";
        else if (p[size - 1])
            err = "bad eoo";
        if (err) {
            invalid_bson(d, err);
            Py_DECREF(list);
            return NULL;
        }
        bool dollar = false;
        d->end = p + size;
        PyObject *doc = dec_document(d, p, (uint32_t)size, &dollar);
        if (!doc || PyList_Append(list, doc) < 0) {
            Py_XDECREF(doc);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(doc);
        p += size;
        len -= (size_t)size;
    }
    return list;
}

static int
dec_init(Dec *d, AmongoState *st, const AmongoCodecOpts *o)
{
    d->st = st;
    d->o = o;
    d->owner = NULL;
    d->depth = 0;
    d->bounds_ready = false;
    d->end = NULL;
    d->stack = NULL;
    d->top = d->cap = 0;
    d->keys = PyCapsule_GetPointer(st->codec_key_cache, KC_CAPSULE);
    return d->keys ? 0 : -1;
}

/* data/len with an optional bytes owner; `obj` is what bson gets when the call is bson's. */
static PyObject *
decode_parsed(AmongoState *st, const AmongoCodecOpts *o, const uint8_t *data, size_t len,
              PyObject *owner, PyObject *obj, bool all)
{
    PyObject *tmp = NULL, *result = NULL;
    if (o->has_decoders) {
        /* A type registry with decoders: bson's own decoder, on the same bytes. */
        if (!obj && !(obj = tmp = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len)))
            return NULL;
        PyObject *args[2] = {obj, o->options};
        result = PyObject_Vectorcall(all ? st->decode_all : st->bson_to_dict, args, 2, NULL);
        Py_XDECREF(tmp);
        return result;
    }
    Dec d;
    if (dec_init(&d, st, o) < 0)
        return NULL;
    if (o->raw_class) {
        /* bson keeps bytes input as the views' owner, and copies any other input to bytes once
         * when it holds a document big enough for a view (its _prepare_input_buffer). */
        if (owner) {
            d.owner = owner;
        } else if (!(obj && PyByteArray_Check(obj)) && has_view_eligible_doc(data, len)) {
            if (!(tmp = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len)))
                return NULL;
            d.owner = tmp;
            data = (const uint8_t *)PyBytes_AS_STRING(tmp);
        }
    }
    /* The objects made here form no cycles, yet each one allocated counts toward a collection
     * and the young ones are then traversed again and again while the batch is built (about a
     * sixth of the time): the cyclic GC waits until the call returns. */
    int gc_was_enabled = PyGC_Disable();
    result = decode_frames(&d, data, len, all);
    PyMem_Free(d.stack); /* empty: every container took or dropped its scratch references */
    if (gc_was_enabled)
        PyGC_Enable();
    Py_XDECREF(tmp);
    return result;
}

PyObject *
amongo_decode_document(AmongoState *st, const uint8_t *data, size_t len, PyObject *codec_options)
{
    AmongoCodecOpts o;
    if (amongo_codec_opts_parse(st, codec_options, &o) < 0)
        return NULL;
    return decode_parsed(st, &o, data, len, NULL, NULL, false);
}

PyObject *
amongo_decode_documents(AmongoState *st, const uint8_t *data, size_t len, PyObject *codec_options)
{
    AmongoCodecOpts o;
    if (amongo_codec_opts_parse(st, codec_options, &o) < 0)
        return NULL;
    return decode_parsed(st, &o, data, len, NULL, NULL, true);
}

PyObject *
amongo_decode_object(AmongoState *st, PyObject *data, PyObject *codec_options, bool all)
{
    /* As bson: the options first, then bson's _get_buffer (simple, contiguous, byte-sized). */
    AmongoCodecOpts o;
    if (amongo_codec_opts_parse(st, codec_options, &o) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        PyErr_SetString(PyExc_ValueError, "must be a contiguous buffer");
    } else if (!view.buf || view.len < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid buffer");
    } else if (view.itemsize != 1) {
        PyErr_SetString(PyExc_ValueError, "buffer data must be ascii or utf8");
    } else {
        result = decode_parsed(st, &o, view.buf, (size_t)view.len,
                               PyBytes_Check(data) ? data : NULL, data, all);
    }
    PyBuffer_Release(&view);
    return result;
}
