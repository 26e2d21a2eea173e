/* encode.c: Python objects to BSON, appended to a native buffer the caller owns, exactly as PyMongo's
 * bson.encode writes them (same type rules in the same order, same key rules, same exceptions and
 * wording). Common exact types are written without any attribute lookup. It must never crash, even on
 * documents that change while they are encoded, and must leave the buffer as it was on error. */
#include "codec.h"

#include <datetime.h>

int
amongo_encode_init(void)
{
    PyDateTime_IMPORT;
    return PyDateTimeAPI ? 0 : -1;
}

typedef struct {
    AmongoState *st;
    const AmongoCodecOpts *o;
    AmongoBuffer *b;
    bool check_keys;
    int depth;
} Enc;

static inline int
put(Enc *e, const void *p, size_t n)
{
    if (amongo_buffer_reserve(e->b, n) < 0)
        return -1;
    memcpy(e->b->data + e->b->len, p, n);
    e->b->len += n;
    return 0;
}

static inline int
put_u8(Enc *e, uint8_t c)
{
    if (e->b->len == e->b->cap && amongo_buffer_reserve(e->b, 1) < 0)
        return -1;
    e->b->data[e->b->len++] = c;
    return 0;
}

static inline int
put_i32(Enc *e, int32_t v)
{
    uint32_t le = BSON_UINT32_TO_LE((uint32_t)v);
    return put(e, &le, 4);
}

static inline int
put_i64(Enc *e, int64_t v)
{
    uint64_t le = BSON_UINT64_TO_LE((uint64_t)v);
    return put(e, &le, 8);
}

static inline void
set_i32(Enc *e, size_t at, int32_t v)
{
    uint32_t le = BSON_UINT32_TO_LE((uint32_t)v);
    memcpy(e->b->data + at, &le, 4);
}

static inline void
set_type(Enc *e, size_t at, uint8_t type)
{
    e->b->data[at] = type;
}

static void
invalid_document(Enc *e, const char *msg)
{
    PyErr_SetString(e->st->codec_InvalidDocument, msg);
}

/* bson's _downcast_and_check: a length that does not fit BSON's int32 sizes. */
static int
check_size(Enc *e, size_t n, size_t extra)
{
    if (n > (size_t)INT32_MAX - extra) {
        PyErr_SetString(e->st->codec_InvalidStringData, "String length must be <= 2147483647");
        return -1;
    }
    return 0;
}

/* Appends the UTF-8 of a str and sets *n to its length. A str that has no UTF-8 (lone surrogates)
 * raises what str.encode('utf-8') raises, as bson's PyUnicode_AsUTF8String does. */
static int
put_utf8(Enc *e, PyObject *s, size_t *n)
{
    if (PyUnicode_READY(s) < 0)
        return -1;
    Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_IS_ASCII(s)) {
        *n = (size_t)len;
        return put(e, PyUnicode_1BYTE_DATA(s), (size_t)len);
    }
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if ((size_t)len > (SIZE_MAX - 16) / 4 || amongo_buffer_reserve(e->b, (size_t)len * (size_t)kind + (size_t)len) < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    /* At most kind + 1 bytes per character: 2 for UCS1, 3 for UCS2, 4 for UCS4. */
    uint8_t *out = e->b->data + e->b->len, *start = out;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            *out++ = (uint8_t)c;
        } else if (c < 0x800) {
            *out++ = (uint8_t)(0xC0 | (c >> 6));
            *out++ = (uint8_t)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            if (c >= 0xD800 && c <= 0xDFFF) {
                PyObject *bytes = PyUnicode_AsUTF8String(s); /* raises UnicodeEncodeError */
                Py_XDECREF(bytes);
                if (!bytes)
                    return -1;
                PyErr_SetString(PyExc_SystemError, "asyncmongo: surrogate encoded");
                return -1;
            }
            *out++ = (uint8_t)(0xE0 | (c >> 12));
            *out++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            *out++ = (uint8_t)(0x80 | (c & 0x3F));
        } else {
            *out++ = (uint8_t)(0xF0 | (c >> 18));
            *out++ = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
            *out++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            *out++ = (uint8_t)(0x80 | (c & 0x3F));
        }
    }
    *n = (size_t)(out - start);
    e->b->len += *n;
    return 0;
}

/* bson's write_unicode: int32 length (with the NUL), the UTF-8, a NUL. */
static int
put_string(Enc *e, PyObject *s)
{
    size_t at = e->b->len, n;
    if (put_i32(e, 0) < 0 || put_utf8(e, s, &n) < 0)
        return -1;
    if (check_size(e, n, 1) < 0)
        return -1;
    set_i32(e, at, (int32_t)(n + 1));
    return put_u8(e, 0);
}

/* bson's write_string: a str, or else a bytes object written as it is. */
static int
put_string_or_bytes(Enc *e, PyObject *v)
{
    if (PyUnicode_Check(v))
        return put_string(e, v);
    char *data = PyBytes_AsString(v);
    if (!data)
        return -1;
    Py_ssize_t n = PyBytes_Size(v);
    if (n < 0 || check_size(e, (size_t)n, 1) < 0)
        return -1;
    /* bson writes size + 1 bytes from the bytes object, its trailing NUL included. */
    if (put_i32(e, (int32_t)(n + 1)) < 0)
        return -1;
    return put(e, data, (size_t)n + 1);
}

static int enc_document(Enc *e, PyObject *doc, bool top_level);
static int enc_value(Enc *e, size_t type_at, PyObject *v);
static int enc_value_inner(Enc *e, size_t type_at, PyObject *v);

/* ---- keys ---- */

static int
check_key_name(Enc *e, const char *name, size_t n)
{
    const char *fmt = NULL;
    if (n > 0 && name[0] == '$')
        fmt = "key '%s' must not start with '$'";
    else if (memchr(name, '.', n))
        fmt = "key '%s' must not contain '.'";
    if (!fmt)
        return 0;
    PyObject *msg = PyUnicode_FromFormat(fmt, name);
    if (msg) {
        PyErr_SetObject(e->st->codec_InvalidDocument, msg);
        Py_DECREF(msg);
    }
    return -1;
}

/* A (name, value) element whose name is already UTF-8 (bson's write_pair with allow_id). */
static int
enc_named(Enc *e, const char *name, size_t n, PyObject *value)
{
    size_t type_at = e->b->len;
    if (put_u8(e, 0) < 0 || put(e, name, n) < 0 || put_u8(e, 0) < 0)
        return -1;
    if (e->check_keys && check_key_name(e, (const char *)e->b->data + type_at + 1, n) < 0)
        return -1;
    return enc_value(e, type_at, value);
}

/* bson's decode_and_write_pair + write_pair: at the top level, "_id" was written first. */
static int
enc_pair(Enc *e, PyObject *key, PyObject *value, bool top_level)
{
    if (!PyUnicode_Check(key)) {
        PyObject *repr = PyObject_Repr(key);
        if (repr) {
            PyObject *msg = PyUnicode_FromFormat("documents must have only string keys, key was %U", repr);
            if (msg) {
                PyErr_SetObject(e->st->codec_InvalidDocument, msg);
                Py_DECREF(msg);
            }
            Py_DECREF(repr);
        }
        return -1;
    }
    size_t type_at = e->b->len, n;
    if (put_u8(e, 0) < 0 || put_utf8(e, key, &n) < 0)
        return -1;
    const char *name = (const char *)e->b->data + type_at + 1;
    if (check_size(e, n, 1) < 0)
        return -1;
    if (memchr(name, 0, n)) {
        invalid_document(e, "Key names must not contain the NULL byte");
        return -1;
    }
    if (top_level && n == 3 && memcmp(name, "_id", 3) == 0) {
        e->b->len = type_at;
        return 0;
    }
    if (put_u8(e, 0) < 0)
        return -1;
    name = (const char *)e->b->data + type_at + 1; /* the buffer may have moved */
    if (e->check_keys && check_key_name(e, name, n) < 0)
        return -1;
    return enc_value(e, type_at, value);
}

/* ---- values ---- */

static void
cannot_encode(Enc *e, PyObject *v)
{
    if (PyLong_Check(v) && PyLong_AsLongLong(v) == -1 && PyErr_Occurred()) {
        PyErr_SetString(PyExc_OverflowError, "MongoDB can only handle up to 8-byte ints");
        return;
    }
    PyErr_Format(e->st->codec_InvalidDocument, "cannot encode object: %R, of type: %R", v,
                 (PyObject *)Py_TYPE(v));
}

/* Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (unsigned)((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1);
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int64_t
millis_from_datetime(PyObject *dt)
{
    int64_t days = days_from_civil(PyDateTime_GET_YEAR(dt), PyDateTime_GET_MONTH(dt), PyDateTime_GET_DAY(dt));
    int64_t secs = days * 86400 + PyDateTime_DATE_GET_HOUR(dt) * 3600 +
                   PyDateTime_DATE_GET_MINUTE(dt) * 60 + PyDateTime_DATE_GET_SECOND(dt);
    return secs * 1000 + PyDateTime_DATE_GET_MICROSECOND(dt) / 1000;
}

static int
enc_datetime(Enc *e, size_t type_at, PyObject *v)
{
    int64_t millis;
    if (PyDateTime_CheckExact(v) && PyDateTime_DATE_GET_TZINFO(v) == Py_None) {
        millis = millis_from_datetime(v); /* datetime.utcoffset() of a naive one is None */
    } else {
        PyObject *args[1] = {v};
        PyObject *off = PyObject_VectorcallMethod(e->st->codec_s_utcoffset, args, 1, NULL);
        if (!off)
            return -1;
        if (off != Py_None) {
            PyObject *utc = PyNumber_Subtract(v, off);
            Py_DECREF(off);
            if (!utc)
                return -1;
            if (!PyDateTime_Check(utc)) {
                PyErr_Format(PyExc_TypeError, "datetime minus its utcoffset() gave %R", (PyObject *)Py_TYPE(utc));
                Py_DECREF(utc);
                return -1;
            }
            millis = millis_from_datetime(utc);
            Py_DECREF(utc);
        } else {
            Py_DECREF(off);
            millis = millis_from_datetime(v);
        }
    }
    set_type(e, type_at, 0x09);
    return put_i64(e, millis);
}

/* bson's _write_regex_to_buffer, for re.Pattern and bson.regex.Regex. */
static int
enc_regex(Enc *e, size_t type_at, PyObject *v)
{
    PyObject *obj = PyObject_GetAttr(v, e->st->codec_s_flags);
    if (!obj)
        return -1;
    long flags = PyLong_AsLong(obj);
    Py_DECREF(obj);
    if (flags == -1 && PyErr_Occurred())
        return -1;
    PyObject *pattern = PyObject_GetAttr(v, e->st->codec_s_pattern);
    if (!pattern)
        return -1;
    bool check_utf8 = false;
    if (PyUnicode_Check(pattern)) {
        PyObject *enc = PyUnicode_AsUTF8String(pattern);
        Py_DECREF(pattern);
        if (!(pattern = enc))
            return -1;
    } else {
        check_utf8 = true;
    }
    int rc = -1;
    const char *data = PyBytes_AsString(pattern);
    if (!data)
        goto done;
    Py_ssize_t n = PyBytes_Size(pattern);
    if (check_size(e, (size_t)n, 0) < 0)
        goto done;
    if (strlen(data) != (size_t)n) {
        invalid_document(e, "regex patterns must not contain the NULL byte");
        goto done;
    }
    if (check_utf8) {
        PyObject *text = PyUnicode_DecodeUTF8(data, n, NULL);
        if (!text) {
            PyErr_Clear();
            PyErr_SetString(e->st->codec_InvalidStringData, "regex patterns must be valid UTF-8");
            goto done;
        }
        Py_DECREF(text);
    }
    if (put(e, data, (size_t)n + 1) < 0)
        goto done;
    char f[8];
    int k = 0;
    if (flags & 2) f[k++] = 'i';
    if (flags & 4) f[k++] = 'l';
    if (flags & 8) f[k++] = 'm';
    if (flags & 16) f[k++] = 's';
    if (flags & 32) f[k++] = 'u';
    if (flags & 64) f[k++] = 'x';
    f[k++] = 0;
    if (put(e, f, (size_t)k) < 0)
        goto done;
    set_type(e, type_at, 0x0B);
    rc = 0;
done:
    Py_DECREF(pattern);
    return rc;
}

static int
enc_array(Enc *e, size_t type_at, PyObject *v)
{
    bool is_list = PyList_Check(v);
    /* bson reads the length once; a sequence that shrinks while its items are encoded (their
     * encoding can run Python code) stops at its new end here instead of reading freed items. */
    Py_ssize_t items = is_list ? PyList_GET_SIZE(v) : PyTuple_GET_SIZE(v);
    set_type(e, type_at, 0x04);
    size_t start = e->b->len;
    if (put_i32(e, 0) < 0)
        return -1;
    if (items > INT32_MAX) {
        PyErr_SetString(e->st->codec_BSONError, "Too many items to serialize.");
        return -1;
    }
    for (Py_ssize_t i = 0; i < items; i++) {
        if (is_list && i >= PyList_GET_SIZE(v))
            break;
        char key[24];
        int n = 0;
        long long x = i;
        char rev[24];
        do {
            rev[n++] = (char)('0' + x % 10);
            x /= 10;
        } while (x);
        for (int j = 0; j < n; j++)
            key[j] = rev[n - 1 - j];
        key[n++] = 0;
        size_t item_at = e->b->len;
        if (put_u8(e, 0) < 0 || put(e, key, (size_t)n) < 0)
            return -1;
        PyObject *item = Py_NewRef(is_list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i));
        int rc = enc_value(e, item_at, item);
        Py_DECREF(item);
        if (rc < 0)
            return -1;
    }
    if (put_u8(e, 0) < 0)
        return -1;
    set_i32(e, start, (int32_t)(e->b->len - start));
    return 0;
}

static int
put_binary(Enc *e, size_t type_at, const char *data, size_t n, unsigned char subtype)
{
    if (check_size(e, n, subtype == 2 ? 4 : 0) < 0)
        return -1;
    set_type(e, type_at, 0x05);
    if (subtype == 2) {
        if (put_i32(e, (int32_t)(n + 4)) < 0 || put_u8(e, subtype) < 0 || put_i32(e, (int32_t)n) < 0)
            return -1;
    } else if (put_i32(e, (int32_t)n) < 0 || put_u8(e, subtype) < 0) {
        return -1;
    }
    return put(e, data, n);
}

/* Writes the raw bytes of a RawBSONDocument (bson's write_raw_doc): bytes or a memoryview. */
static int
put_raw(Enc *e, PyObject *doc)
{
    PyObject *raw = PyObject_GetAttr(doc, e->st->codec_s_raw);
    if (!raw)
        return -1;
    int rc = -1;
    if (PyBytes_Check(raw)) {
        if (check_size(e, (size_t)PyBytes_GET_SIZE(raw), 0) == 0)
            rc = put(e, PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw));
    } else if (PyMemoryView_Check(raw)) {
        Py_buffer view;
        if (PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE) == 0) {
            if (check_size(e, (size_t)view.len, 0) == 0)
                rc = put(e, view.buf, (size_t)view.len);
            PyBuffer_Release(&view);
        }
    } else {
        PyErr_Format(PyExc_TypeError, "RawBSONDocument.raw must be bytes or memoryview, not %.200s",
                     Py_TYPE(raw)->tp_name);
    }
    Py_DECREF(raw);
    return rc;
}

/* A bytes attribute of at least `need` bytes (ObjectId.binary, Decimal128.bid). */
static int
put_attr_bytes(Enc *e, PyObject *v, PyObject *name, size_t need)
{
    PyObject *b = PyObject_GetAttr(v, name);
    if (!b)
        return -1;
    const char *data = PyBytes_AsString(b);
    int rc = -1;
    if (data) {
        if ((size_t)PyBytes_GET_SIZE(b) < need)
            PyErr_Format(PyExc_ValueError, "%U must be %zu bytes", name, need);
        else
            rc = put(e, data, need);
    }
    Py_DECREF(b);
    return rc;
}

static int
enc_u32_attr(Enc *e, PyObject *v, PyObject *name)
{
    PyObject *obj = PyObject_GetAttr(v, name);
    if (!obj)
        return -1;
    unsigned long x = PyLong_AsUnsignedLong(obj);
    Py_DECREF(obj);
    if (x == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    return put_i32(e, (int32_t)x);
}

/* The unsigned big-endian bytes of an int (CPython's own conversion; its signature grew an
 * argument in 3.13). */
static int
long_as_bytes_be(PyLongObject *n, unsigned char *bytes, size_t size)
{
#if PY_VERSION_HEX >= 0x030D0000
    return _PyLong_AsByteArray(n, bytes, size, 0, 0, 1);
#else
    return _PyLong_AsByteArray(n, bytes, size, 0, 0);
#endif
}

static int
enc_uuid(Enc *e, size_t type_at, PyObject *v)
{
    AmongoState *st = e->st;
    if (Py_TYPE(v) == (PyTypeObject *)st->codec_UUID && e->o->uuid_rep == AMONGO_UUID_STANDARD) {
        /* Binary.from_uuid(u, STANDARD) is u.bytes (u.int, big-endian) with subtype 4. */
        PyObject *n = *amongo_codec_slot(v, st->codec_uuid_int_slot);
        unsigned char bytes[16];
        if (n && PyLong_CheckExact(n) && long_as_bytes_be((PyLongObject *)n, bytes, 16) == 0)
            return put_binary(e, type_at, (const char *)bytes, 16, 4);
        PyErr_Clear();
    }
    PyObject *rep = PyLong_FromLong(e->o->uuid_rep);
    if (!rep)
        return -1;
    PyObject *args[3] = {st->codec_Binary, v, rep};
    PyObject *bin = PyObject_VectorcallMethod(st->codec_s_from_uuid, args, 3, NULL);
    Py_DECREF(rep);
    if (!bin)
        return -1;
    int rc = enc_value_inner(e, type_at, bin);
    Py_DECREF(bin);
    return rc;
}

/* A value whose _type_marker is one of bson's: 1 written, 0 not one of them, -1 error. */
static int
enc_marked(Enc *e, size_t type_at, PyObject *v, long marker)
{
    AmongoState *st = e->st;
    switch (marker) {
    case 5: { /* Binary */
        PyObject *sub = PyObject_GetAttr(v, st->codec_s_subtype);
        if (!sub)
            return -1;
        long subtype = PyLong_AsLong(sub);
        Py_DECREF(sub);
        if (subtype == -1 && PyErr_Occurred())
            return -1;
        Py_ssize_t n = PyBytes_Size(v);
        if (n < 0)
            return -1;
        return put_binary(e, type_at, PyBytes_AS_STRING(v), (size_t)n, (unsigned char)subtype) < 0 ? -1 : 1;
    }
    case 7: /* ObjectId */
        if (Py_TYPE(v) == (PyTypeObject *)st->codec_ObjectId) {
            PyObject *raw = *amongo_codec_slot(v, st->codec_oid_slot);
            if (raw && PyBytes_CheckExact(raw) && PyBytes_GET_SIZE(raw) >= 12) {
                set_type(e, type_at, 0x07);
                return put(e, PyBytes_AS_STRING(raw), 12) < 0 ? -1 : 1;
            }
        }
        if (put_attr_bytes(e, v, st->codec_s_binary, 12) < 0)
            return -1;
        set_type(e, type_at, 0x07);
        return 1;
    case 9: { /* DatetimeMS */
        PyObject *n = PyNumber_Long(v);
        if (!n)
            return -1;
        long long ms = PyLong_AsLongLong(n);
        Py_DECREF(n);
        if (ms == -1 && PyErr_Occurred()) {
            PyErr_SetString(PyExc_OverflowError, "MongoDB datetimes can only handle up to 8-byte ints");
            return -1;
        }
        set_type(e, type_at, 0x09);
        return put_i64(e, ms) < 0 ? -1 : 1;
    }
    case 11:
        return enc_regex(e, type_at, v) < 0 ? -1 : 1;
    case 13: { /* Code */
        PyObject *scope = PyObject_GetAttr(v, st->codec_s_scope);
        if (!scope)
            return -1;
        int rc;
        if (scope == Py_None) {
            set_type(e, type_at, 0x0D);
            rc = put_string_or_bytes(e, v);
        } else {
            set_type(e, type_at, 0x0F);
            size_t start = e->b->len;
            bool check = e->check_keys;
            e->check_keys = false; /* bson writes scopes without check_keys */
            rc = put_i32(e, 0);
            if (rc == 0)
                rc = put_string_or_bytes(e, v);
            if (rc == 0)
                rc = enc_document(e, scope, false);
            e->check_keys = check;
            if (rc == 0)
                set_i32(e, start, (int32_t)(e->b->len - start));
        }
        Py_DECREF(scope);
        return rc < 0 ? -1 : 1;
    }
    case 17: /* Timestamp */
        if (enc_u32_attr(e, v, st->codec_s_inc) < 0 || enc_u32_attr(e, v, st->codec_s_time) < 0)
            return -1;
        set_type(e, type_at, 0x11);
        return 1;
    case 18: { /* Int64 */
        long long x = PyLong_AsLongLong(v);
        if (PyErr_Occurred()) {
            PyErr_SetString(PyExc_OverflowError, "MongoDB can only handle up to 8-byte ints");
            return -1;
        }
        set_type(e, type_at, 0x12);
        return put_i64(e, x) < 0 ? -1 : 1;
    }
    case 19: /* Decimal128 */
        if (put_attr_bytes(e, v, st->codec_s_bid, 16) < 0)
            return -1;
        set_type(e, type_at, 0x13);
        return 1;
    case 100: { /* DBRef */
        PyObject *args[1] = {v};
        PyObject *doc = PyObject_VectorcallMethod(st->codec_s_as_doc, args, 1, NULL);
        if (!doc)
            return -1;
        bool check = e->check_keys;
        e->check_keys = false;
        int rc = enc_document(e, doc, false);
        e->check_keys = check;
        Py_DECREF(doc);
        if (rc < 0)
            return -1;
        set_type(e, type_at, 0x03);
        return 1;
    }
    case 101: /* RawBSONDocument */
        if (put_raw(e, v) < 0)
            return -1;
        set_type(e, type_at, 0x03);
        return 1;
    case 255:
        set_type(e, type_at, 0xFF);
        return 1;
    case 127:
        set_type(e, type_at, 0x7F);
        return 1;
    }
    return 0;
}

static int
enc_int(Enc *e, size_t type_at, PyObject *v, bool *done)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow) {
        *done = false; /* bson tries the fallback encoder, then says it cannot encode */
        return 0;
    }
    *done = true;
    if (x >= INT32_MIN && x <= INT32_MAX) {
        set_type(e, type_at, 0x10);
        return put_i32(e, (int32_t)x);
    }
    set_type(e, type_at, 0x12);
    return put_i64(e, x);
}

static int
enc_double(Enc *e, size_t type_at, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, 8);
    set_type(e, type_at, 0x01);
    return put_i64(e, (int64_t)bits);
}

/* bson's _write_element_to_buffer: the type byte at type_at is filled in here. */
static int
enc_value_inner(Enc *e, size_t type_at, PyObject *v)
{
    AmongoState *st = e->st;
    PyTypeObject *tp = Py_TYPE(v);
    bool done;
    /* Exact builtins first: they cannot carry a _type_marker. */
    if (tp == &PyUnicode_Type) {
        set_type(e, type_at, 0x02);
        return put_string(e, v);
    }
    if (tp == &PyLong_Type) {
        if (enc_int(e, type_at, v, &done) < 0)
            return -1;
        if (done)
            return 0;
        cannot_encode(e, v);
        return -1;
    }
    if (tp == &PyFloat_Type)
        return enc_double(e, type_at, PyFloat_AS_DOUBLE(v));
    if (tp == &PyBool_Type) {
        set_type(e, type_at, 0x08);
        return put_u8(e, v == Py_True);
    }
    if (v == Py_None) {
        set_type(e, type_at, 0x0A);
        return 0;
    }
    if (tp == &PyDict_Type) {
        set_type(e, type_at, 0x03);
        return enc_document(e, v, false);
    }
    if (tp == &PyList_Type || tp == &PyTuple_Type)
        return enc_array(e, type_at, v);
    if (tp == &PyBytes_Type)
        return put_binary(e, type_at, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v), 0);
    if (tp == PyDateTimeAPI->DateTimeType)
        return enc_datetime(e, type_at, v);

    long marker = amongo_codec_type_marker(st, v);
    if (marker < 0)
        return -1;
    if (marker) {
        int rc = enc_marked(e, type_at, v, marker);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }

    /* No marker, or not one of bson's: the builtin kinds, subclasses included, in bson's order. */
    if (PyBool_Check(v)) {
        set_type(e, type_at, 0x08);
        return put_u8(e, v == Py_True);
    }
    if (PyLong_Check(v)) {
        if (enc_int(e, type_at, v, &done) < 0)
            return -1;
        if (done)
            return 0;
    } else if (PyFloat_Check(v)) {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        return enc_double(e, type_at, d);
    } else if (PyDict_Check(v)) {
        set_type(e, type_at, 0x03);
        return enc_document(e, v, false);
    } else if (PyList_Check(v) || PyTuple_Check(v)) {
        return enc_array(e, type_at, v);
    } else if (PyBytes_Check(v)) {
        return put_binary(e, type_at, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v), 0);
    } else if (PyUnicode_Check(v)) {
        set_type(e, type_at, 0x02);
        return put_string(e, v);
    } else if (PyDateTime_Check(v)) {
        return enc_datetime(e, type_at, v);
    } else if (PyObject_TypeCheck(v, (PyTypeObject *)st->codec_Pattern)) {
        return enc_regex(e, type_at, v);
    } else {
        int is = PyObject_IsInstance(v, st->codec_Mapping);
        if (is < 0)
            return -1;
        if (is) {
            set_type(e, type_at, 0x03);
            return enc_document(e, v, false);
        }
        is = PyObject_IsInstance(v, st->codec_UUID);
        if (is < 0)
            return -1;
        if (is)
            return enc_uuid(e, type_at, v);
    }
    cannot_encode(e, v);
    return -1;
}

static int
enc_value(Enc *e, size_t type_at, PyObject *v)
{
    static const char where[] = " while encoding an object to BSON ";
    if (Py_EnterRecursiveCall(where))
        return -1;
    if (++e->depth > AMONGO_CODEC_MAX_DEPTH) {
        PyErr_Format(PyExc_RecursionError, "maximum recursion depth exceeded%s", where);
        e->depth--;
        Py_LeaveRecursiveCall();
        return -1;
    }
    int rc = enc_value_inner(e, type_at, v);
    e->depth--;
    Py_LeaveRecursiveCall();
    return rc;
}

/* bson's handle_invalid_doc_error: an InvalidDocument from inside a top-level document becomes
 * InvalidDocument("Invalid document: <message>", doc). */
static void
reword_invalid_document(Enc *e, PyObject *doc)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (v && PyErr_GivenExceptionMatches(t, e->st->codec_InvalidDocument)) {
        PyObject *msg = PyObject_Str(v);
        const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
        PyObject *new_msg = text ? PyUnicode_FromFormat("Invalid document: %s", text) : NULL;
        if (new_msg) {
            PyObject *args[2] = {new_msg, doc};
            PyObject *exc = PyObject_Vectorcall(e->st->codec_InvalidDocument, args, 2, NULL);
            Py_DECREF(new_msg);
            if (exc) {
                Py_DECREF(t);
                Py_DECREF(v);
                t = Py_NewRef(e->st->codec_InvalidDocument);
                v = exc;
            }
        }
        Py_XDECREF(msg);
        PyErr_Clear();
        PyErr_NormalizeException(&t, &v, &tb);
    }
    PyErr_Restore(t, v, tb);
}

/* bson's write_dict. */
static int
enc_document(Enc *e, PyObject *doc, bool top_level)
{
    AmongoState *st = e->st;
    bool is_dict = PyDict_Check(doc);
    if (!is_dict) {
        long marker = amongo_codec_type_marker(st, doc);
        if (marker < 0)
            return -1;
        if (marker == 101)
            return put_raw(e, doc);
        int is = PyObject_IsInstance(doc, st->codec_Mapping);
        if (is < 0)
            return -1;
        if (!is) {
            PyObject *repr = PyObject_Repr(doc);
            if (repr) {
                PyErr_Format(PyExc_TypeError, "encoder expected a mapping type but got: %U", repr);
                Py_DECREF(repr);
            } else {
                PyErr_SetString(PyExc_TypeError, "encoder expected a mapping type");
            }
            return -1;
        }
    }
    size_t start = e->b->len;
    if (put_i32(e, 0) < 0)
        return -1;

    if (top_level) {
        /* _id first. A dict is asked without __getitem__ (a defaultdict would grow an _id). */
        PyObject *id = NULL;
        if (is_dict) {
            id = PyDict_GetItemWithError(doc, st->codec_s_id);
            if (!id)
                PyErr_Clear(); /* bson's PyDict_GetItem swallows lookup errors */
            Py_XINCREF(id);
        } else if (PyMapping_HasKey(doc, st->codec_s_id)) {
            if (!(id = PyObject_GetItem(doc, st->codec_s_id)))
                return -1;
        }
        if (id) {
            int rc = enc_named(e, "_id", 3, id);
            Py_DECREF(id);
            if (rc < 0)
                return -1;
        }
    }

    if (is_dict) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(doc, &pos, &key, &value)) {
            /* Own them: encoding a value can run Python code that changes the dict. */
            Py_INCREF(key);
            Py_INCREF(value);
            int rc = enc_pair(e, key, value, top_level);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) {
                if (top_level && PyErr_Occurred())
                    reword_invalid_document(e, doc);
                return -1;
            }
        }
    } else {
        PyObject *iter = PyObject_GetIter(doc);
        if (!iter)
            return -1;
        PyObject *key;
        while ((key = PyIter_Next(iter))) {
            PyObject *value = PyObject_GetItem(doc, key);
            if (!value) {
                PyErr_SetObject(PyExc_KeyError, key);
                Py_DECREF(key);
                Py_DECREF(iter);
                return -1;
            }
            int rc = enc_pair(e, key, value, top_level);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) {
                if (top_level && PyErr_Occurred())
                    reword_invalid_document(e, doc);
                Py_DECREF(iter);
                return -1;
            }
        }
        Py_DECREF(iter);
        if (PyErr_Occurred())
            return -1;
    }
    if (put_u8(e, 0) < 0)
        return -1;
    if (e->b->len - start > INT32_MAX) {
        PyErr_SetString(e->st->codec_InvalidDocument, "BSON document too large");
        return -1;
    }
    set_i32(e, start, (int32_t)(e->b->len - start));
    return 0;
}

/* bson's _dict_to_bson, appending to out. */
int
amongo_encode_document(AmongoState *st, PyObject *doc, PyObject *codec_options, unsigned flags,
                       AmongoBuffer *out)
{
    AmongoCodecOpts o;
    if (amongo_codec_opts_parse(st, codec_options, &o) < 0)
        return -1;
    size_t start = out->len;
    bool top_level = flags & AMONGO_ENCODE_ID_FIRST;
    bool check_keys = flags & AMONGO_ENCODE_CHECK_KEYS;
    Enc e = {st, &o, out, check_keys, 0};
    int rc;

    if (o.has_encoders) {
        /* Custom type encoders or a fallback encoder: bson writes the document. */
        PyObject *bytes = PyObject_CallFunction(st->codec_dict_to_bson, "OiOi", doc, (int)check_keys,
                                                o.options, (int)top_level);
        if (!bytes)
            return -1;
        rc = PyBytes_Check(bytes) ? put(&e, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes)) : -1;
        if (!PyBytes_Check(bytes))
            PyErr_SetString(PyExc_TypeError, "bson._dict_to_bson did not return bytes");
        Py_DECREF(bytes);
        goto done;
    }
    if (Py_TYPE(doc) != &PyDict_Type) {
        /* A RawBSONDocument is its bytes, as they are (bson checks nothing in them). */
        long marker = amongo_codec_type_marker(st, doc);
        if (marker < 0)
            return -1;
        if (marker == 101) {
            rc = put_raw(&e, doc);
            goto done;
        }
    }
    rc = enc_document(&e, doc, top_level);
done:
    if (rc < 0)
        out->len = start;
    return rc < 0 ? -1 : 0;
}
