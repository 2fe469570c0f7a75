/* Compiled form of the dynamic-code hot path of cardcore/codes.py.
 *
 * cardcore/codes.py is the reference: it has every rule and every message, and it runs
 * wherever this module was not built. This module repeats only what every code issued
 * and every scan verified goes through -- sealing a VALID, reading the plain form
 * VUID:0:VALID, opening a VALID -- without the interpreter between the SM3/SM4 calls.
 * The cryptography stays where codes.py has it: the SM3 contexts and SM4 block ciphers
 * are the Python objects codes.py hands over (hashlib/OpenSSL, ``cryptography``); this
 * module only calls them. tests/unit/test_codec_compiled.py holds both to the same answers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define VUID_LEN 64
#define VALID_LEN 32
#define HEAD_LEN 8
#define TAG_LEN 8
#define BLOCK_LEN 16
#define PLAIN_LEN (VUID_LEN + 3 + VALID_LEN) /* VUID ":0:" VALID */

/* Set once by configure(): the types built here and the things called. */
static PyObject *code_text_type;  /* cardcore.codes.CodeText */
static PyObject *valid_info_type; /* cardcore.codes.ValidInfo */
static PyObject *new_sm3;         /* a fresh SM3 context: update(), digest() */
static PyObject *code_invalid;    /* cardcore.errors.CodeInvalid */
static PyObject *dynamic_kind;    /* "dynamic" */
static PyObject *str_update, *str_digest, *str_decrypt_block;
static PyObject *invalid_message;

static const char HEX_UPPER[] = "0123456789ABCDEF";

/* Value of each byte as an uppercase hex digit; 0x80 marks every other byte. Checks and
 * decoding go through this table without a branch per character: scanned codes are
 * random hex, on which a branch per character is mispredicted about half the time (that
 * cost a verification more than its SM4 call). */
static unsigned char HEX_VALUE[256];

static void
fill_hex_values(void)
{
    memset(HEX_VALUE, 0x80, sizeof(HEX_VALUE));
    for (int i = 0; i < 16; i++)
        HEX_VALUE[(unsigned char)HEX_UPPER[i]] = (unsigned char)i;
}

static int
is_upper_hex(const Py_UCS1 *text, Py_ssize_t length)
{
    unsigned char marks = 0;
    for (Py_ssize_t i = 0; i < length; i++)
        marks |= HEX_VALUE[text[i]];
    return (marks & 0x80) == 0;
}

/* Whether ``text`` is a str of ASCII characters only: its data are then those bytes. */
static int
is_ascii_str(PyObject *text)
{
    if (!PyUnicode_Check(text))
        return 0;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) { /* a str from the old C API, not laid out yet */
        PyErr_Clear();
        return 0;
    }
#endif
    return PyUnicode_IS_ASCII(text);
}

/* The ASCII characters of ``text`` when it is a str of ``length`` uppercase hex digits. */
static const Py_UCS1 *
upper_hex_chars(PyObject *text, Py_ssize_t length)
{
    if (!is_ascii_str(text) || PyUnicode_GET_LENGTH(text) != length)
        return NULL;
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
    return is_upper_hex(chars, length) ? chars : NULL;
}

/* An empty instance of a tuple subclass (a named tuple), as tuple.__new__ makes one. */
static PyObject *
new_tuple_of(PyObject *type, Py_ssize_t length)
{
    return ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, length);
}

/* Whether configure() was called: every function here needs what it hands over. */
static int
ready(void)
{
    if (code_text_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cardcore._codec.configure() was not called");
        return 0;
    }
    return 1;
}

/* Whether a call may go on: ``expected`` arguments, and configure() done. */
static int
callable_with(Py_ssize_t nargs, Py_ssize_t expected, const char *usage)
{
    if (nargs != expected) {
        PyErr_SetString(PyExc_TypeError, usage);
        return 0;
    }
    return ready();
}

/* The 16 bytes an SM4 block call (``who``) returned, copied to ``out``; takes over the
 * reference to ``result`` (NULL: the call failed). -1 with an exception set otherwise. */
static int
take_block(PyObject *result, const char *who, unsigned char *out)
{
    if (result == NULL)
        return -1;
    if (!PyBytes_Check(result) || PyBytes_GET_SIZE(result) != BLOCK_LEN) {
        Py_DECREF(result);
        PyErr_Format(PyExc_TypeError, "%s must return one 16-byte block", who);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(result), BLOCK_LEN);
    Py_DECREF(result);
    return 0;
}

/* CodeText(vuid, "dynamic", valid, None, None), taking over the caller's references. */
static PyObject *
dynamic_code(PyObject *vuid, PyObject *valid)
{
    PyObject *code = new_tuple_of(code_text_type, 5);
    if (code == NULL) {
        Py_DECREF(vuid);
        Py_DECREF(valid);
        return NULL;
    }
    PyTuple_SET_ITEM(code, 0, vuid);
    Py_INCREF(dynamic_kind);
    PyTuple_SET_ITEM(code, 1, dynamic_kind);
    PyTuple_SET_ITEM(code, 2, valid);
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(code, 3, Py_None);
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(code, 4, Py_None);
    return code;
}

/* The first TAG_LEN bytes of SM3(vuid || head), through the SM3 context codes.py uses. */
static int
code_tag(const Py_UCS1 *vuid, const unsigned char *head, unsigned char *tag)
{
    unsigned char message[VUID_LEN + HEAD_LEN];
    memcpy(message, vuid, VUID_LEN);
    memcpy(message + VUID_LEN, head, HEAD_LEN);

    PyObject *context = PyObject_CallNoArgs(new_sm3);
    if (context == NULL)
        return -1;
    PyObject *data = PyBytes_FromStringAndSize((const char *)message, sizeof(message));
    if (data == NULL) {
        Py_DECREF(context);
        return -1;
    }
    PyObject *args[2] = {context, data};
    PyObject *none = PyObject_VectorcallMethod(str_update, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(data);
    if (none == NULL) {
        Py_DECREF(context);
        return -1;
    }
    Py_DECREF(none);
    PyObject *digest = PyObject_VectorcallMethod(str_digest, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(context);
    if (digest == NULL)
        return -1;
    if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) < TAG_LEN) {
        Py_DECREF(digest);
        PyErr_SetString(PyExc_TypeError, "the SM3 context gave no digest");
        return -1;
    }
    memcpy(tag, PyBytes_AS_STRING(digest), TAG_LEN);
    Py_DECREF(digest);
    return 0;
}

static int
unsigned_32(PyObject *number, uint32_t *out)
{
    if (!PyLong_Check(number)) {
        PyErr_SetString(PyExc_ValueError, "expires_at_s must fit in an unsigned 32-bit unix time");
        return -1;
    }
    unsigned long value = PyLong_AsUnsignedLong(number);
    if ((value == (unsigned long)-1 && PyErr_Occurred()) || value > 0xFFFFFFFFUL) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "expires_at_s must fit in an unsigned 32-bit unix time");
        return -1;
    }
    *out = (uint32_t)value;
    return 0;
}

static void
put_u32(unsigned char *out, uint32_t value)
{
    out[0] = (unsigned char)(value >> 24);
    out[1] = (unsigned char)(value >> 16);
    out[2] = (unsigned char)(value >> 8);
    out[3] = (unsigned char)value;
}

static uint32_t
get_u32(const unsigned char *in)
{
    return ((uint32_t)in[0] << 24) | ((uint32_t)in[1] << 16) | ((uint32_t)in[2] << 8) | (uint32_t)in[3];
}

/* issue(vuid, expires_at_s, serial, encrypt_block) -> CodeText: a dynamic code, sealed as
 * codes.seal_valid does. ValueError names a bad VUID or expiry. */
static PyObject *
issue(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!callable_with(nargs, 4, "issue() takes vuid, expires_at_s, serial, encrypt_block"))
        return NULL;
    PyObject *vuid = args[0];
    const Py_UCS1 *vuid_chars = upper_hex_chars(vuid, VUID_LEN);
    if (vuid_chars == NULL) {
        PyErr_SetString(PyExc_ValueError, "VUID must be exactly 64 uppercase hex characters");
        return NULL;
    }
    uint32_t expires_at_s, serial;
    if (unsigned_32(args[1], &expires_at_s) < 0)
        return NULL;
    serial = (uint32_t)PyLong_AsUnsignedLongMask(args[2]);
    if (PyErr_Occurred())
        return NULL;

    unsigned char block[BLOCK_LEN];
    put_u32(block, expires_at_s);
    put_u32(block + 4, serial);
    if (code_tag(vuid_chars, block, block + HEAD_LEN) < 0)
        return NULL;

    PyObject *plain = PyBytes_FromStringAndSize((const char *)block, BLOCK_LEN);
    if (plain == NULL)
        return NULL;
    unsigned char sealed[BLOCK_LEN];
    int failed = take_block(PyObject_CallOneArg(args[3], plain), "encrypt_block", sealed);
    Py_DECREF(plain);
    if (failed)
        return NULL;
    PyObject *valid = PyUnicode_New(VALID_LEN, 127);
    if (valid == NULL)
        return NULL;
    Py_UCS1 *valid_chars = PyUnicode_1BYTE_DATA(valid);
    for (int i = 0; i < BLOCK_LEN; i++) {
        valid_chars[2 * i] = HEX_UPPER[sealed[i] >> 4];
        valid_chars[2 * i + 1] = HEX_UPPER[sealed[i] & 0x0F];
    }
    Py_INCREF(vuid);
    return dynamic_code(vuid, valid);
}

static int
is_scanner_whitespace(Py_UCS1 c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* parse_plain(text) -> CodeText | None: the code when ``text`` (with whitespace a scanner
 * adds at either end) is exactly VUID:0:VALID; None for anything else, which codes.py reads
 * (and names what is wrong with). */
static PyObject *
parse_plain(PyObject *module, PyObject *text)
{
    if (!ready())
        return NULL;
    if (!is_ascii_str(text))
        Py_RETURN_NONE;
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t start = 0, end = PyUnicode_GET_LENGTH(text);
    while (start < end && is_scanner_whitespace(chars[start]))
        start++;
    while (end > start && is_scanner_whitespace(chars[end - 1]))
        end--;
    if (end - start != PLAIN_LEN)
        Py_RETURN_NONE;
    const Py_UCS1 *code_chars = chars + start;
    if (code_chars[VUID_LEN] != ':' || code_chars[VUID_LEN + 1] != '0' || code_chars[VUID_LEN + 2] != ':'
        || !is_upper_hex(code_chars, VUID_LEN) || !is_upper_hex(code_chars + VUID_LEN + 3, VALID_LEN))
        Py_RETURN_NONE;

    PyObject *vuid = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, code_chars, VUID_LEN);
    if (vuid == NULL)
        return NULL;
    PyObject *valid = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, code_chars + VUID_LEN + 3, VALID_LEN);
    if (valid == NULL) {
        Py_DECREF(vuid);
        return NULL;
    }
    return dynamic_code(vuid, valid);
}

/* open(vuid, valid, ciphers) -> ValidInfo | None, as codes.open_valid: ``ciphers`` are
 * (version, block cipher) newest first; CodeInvalid when none opens it. None when VUID or
 * VALID are not uppercase hex of their lengths, which codes.py reports. */
static PyObject *
open_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!callable_with(nargs, 3, "open() takes vuid, valid, ciphers"))
        return NULL;
    const Py_UCS1 *vuid_chars = upper_hex_chars(args[0], VUID_LEN);
    const Py_UCS1 *valid_chars = upper_hex_chars(args[1], VALID_LEN);
    PyObject *ciphers = args[2];
    if (vuid_chars == NULL || valid_chars == NULL || !PyTuple_Check(ciphers))
        Py_RETURN_NONE;

    unsigned char sealed_bytes[BLOCK_LEN];
    for (int i = 0; i < BLOCK_LEN; i++)
        sealed_bytes[i] = (unsigned char)(HEX_VALUE[valid_chars[2 * i]] << 4 | HEX_VALUE[valid_chars[2 * i + 1]]);
    PyObject *sealed = PyBytes_FromStringAndSize((const char *)sealed_bytes, BLOCK_LEN);
    if (sealed == NULL)
        return NULL;

    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ciphers); i++) {
        PyObject *pair = PyTuple_GET_ITEM(ciphers, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "ciphers must be (version, block cipher) pairs");
            goto fail;
        }
        PyObject *call_args[2] = {PyTuple_GET_ITEM(pair, 1), sealed};
        PyObject *opened = PyObject_VectorcallMethod(
            str_decrypt_block, call_args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        unsigned char block[BLOCK_LEN], tag[TAG_LEN];
        if (take_block(opened, "decrypt_block", block) < 0 || code_tag(vuid_chars, block, tag) < 0)
            goto fail;
        /* Constant time, as hmac.compare_digest in codes.py. */
        unsigned char difference = 0;
        for (int j = 0; j < TAG_LEN; j++)
            difference |= (unsigned char)(tag[j] ^ block[HEAD_LEN + j]);
        if (difference == 0) {
            Py_DECREF(sealed);
            PyObject *info = new_tuple_of(valid_info_type, 3);
            if (info == NULL)
                return NULL;
            PyObject *expires_at_s = PyLong_FromUnsignedLong(get_u32(block));
            PyObject *serial = PyLong_FromUnsignedLong(get_u32(block + 4));
            if (expires_at_s == NULL || serial == NULL) {
                Py_XDECREF(expires_at_s);
                Py_XDECREF(serial);
                Py_DECREF(info);
                return NULL;
            }
            PyObject *version = PyTuple_GET_ITEM(pair, 0);
            Py_INCREF(version);
            PyTuple_SET_ITEM(info, 0, expires_at_s);
            PyTuple_SET_ITEM(info, 1, serial);
            PyTuple_SET_ITEM(info, 2, version);
            return info;
        }
    }
    Py_DECREF(sealed);
    PyErr_SetObject(code_invalid, invalid_message);
    return NULL;

fail:
    Py_DECREF(sealed);
    return NULL;
}

/* configure(CodeText, ValidInfo, new_sm3, CodeInvalid, invalid_message): what codes.py owns. */
static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "configure() takes CodeText, ValidInfo, new_sm3, CodeInvalid, invalid_message");
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (!PyType_Check(args[i]) || !PyType_IsSubtype((PyTypeObject *)args[i], &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "CodeText and ValidInfo must be tuple types");
            return NULL;
        }
    }
    Py_INCREF(args[0]);
    Py_XSETREF(code_text_type, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(valid_info_type, args[1]);
    Py_INCREF(args[2]);
    Py_XSETREF(new_sm3, args[2]);
    Py_INCREF(args[3]);
    Py_XSETREF(code_invalid, args[3]);
    Py_INCREF(args[4]);
    Py_XSETREF(invalid_message, args[4]);
    Py_RETURN_NONE;
}

static PyMethodDef codec_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, NULL},
    {"issue", (PyCFunction)(void (*)(void))issue, METH_FASTCALL, NULL},
    {"parse_plain", parse_plain, METH_O, NULL},
    {"open", (PyCFunction)(void (*)(void))open_, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT, "cardcore._codec", "Compiled hot path of cardcore.codes.", -1, codec_methods,
};

PyMODINIT_FUNC
PyInit__codec(void)
{
    fill_hex_values();
    dynamic_kind = PyUnicode_InternFromString("dynamic");
    str_update = PyUnicode_InternFromString("update");
    str_digest = PyUnicode_InternFromString("digest");
    str_decrypt_block = PyUnicode_InternFromString("decrypt_block");
    if (dynamic_kind == NULL || str_update == NULL || str_digest == NULL || str_decrypt_block == NULL)
        return NULL;
    return PyModule_Create(&codec_module);
}
