/*
 * _fastdns: the embedded DNS's hot path in C (a CPython extension, built on first use).
 *
 * Python decides every answer (dnspython, the zone, the rules); this module only replays
 * answers Python already built, for queries identical to earlier ones but for their ID.
 * serve() takes a batch of datagrams with recvmmsg, answers the cached ones with sendmmsg,
 * all without the GIL, and returns the others to Python.  Round-robin answers are stored as
 * records that are shuffled on every hit.
 *
 *   t = Table()
 *   t.put(key, body)                        body = answer without its 2-byte ID
 *   t.put_shuffled(key, head, [rr, ...], tail)
 *   t.clear(); len(t)
 *   hits, misses = serve(fd, t)             misses: [(datagram, (host, port)), ...]
 *
 * The key is the query without its ID (flags, counts, question, EDNS): the same bytes Python
 * uses for its own cache.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define MAXPKT 4096
#define MAXCHUNKS 64
#define MINCAP 8      /* a sandbox usually asks for a handful of names */
#define MAXCAP 4096   /* bounded: a table that fills up starts over */

typedef struct Entry {
    uint64_t hash;
    unsigned char *key;
    size_t keylen;
    unsigned char *body;   /* static answer, or head for shuffled ones */
    size_t bodylen;
    unsigned char *chunks; /* nchunks * chunklen bytes, shuffled on use */
    int nchunks;
    size_t chunklen;
    unsigned char *tail;
    size_t taillen;
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *slots;
    size_t cap;
    size_t used;
} Table;

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h | 1; /* 0 marks an empty slot */
}

static void entry_free(Entry *e) {
    free(e->key);
    free(e->body);
    free(e->chunks);
    free(e->tail);
    memset(e, 0, sizeof *e);
}

static void table_clear_all(Table *t) {
    if (t->used == 0) return; /* do not touch (and make resident) an empty table */
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].hash) entry_free(&t->slots[i]);
    t->used = 0;
}

/* Double the table, moving entries over (keys and values are not copied). */
static int table_grow(Table *t) {
    size_t cap = t->cap * 2;
    Entry *slots = calloc(cap, sizeof(Entry));
    if (!slots) return -1;
    for (size_t i = 0; i < t->cap; i++) {
        Entry *e = &t->slots[i];
        if (!e->hash) continue;
        size_t j = e->hash & (cap - 1);
        while (slots[j].hash) j = (j + 1) & (cap - 1);
        slots[j] = *e;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static Entry *table_find(Table *t, const unsigned char *key, size_t keylen, uint64_t h) {
    size_t mask = t->cap - 1;
    for (size_t i = h & mask, n = 0; n < t->cap; i = (i + 1) & mask, n++) {
        Entry *e = &t->slots[i];
        if (!e->hash) return NULL;
        if (e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0) return e;
    }
    return NULL;
}

static unsigned char *copy_bytes(const char *p, Py_ssize_t n) {
    unsigned char *out = malloc(n ? (size_t)n : 1);
    if (out && n) memcpy(out, p, (size_t)n);
    return out;
}

/* The entry for `key`, emptied and holding a copy of the key (grown or cleared as needed). */
static Entry *table_claim(Table *t, const char *key, Py_ssize_t keylen) {
    uint64_t h = fnv1a((const unsigned char *)key, (size_t)keylen);
    if (t->used * 2 >= t->cap) {
        if (t->cap >= MAXCAP || table_grow(t) != 0) table_clear_all(t); /* bounded */
    }
    size_t mask = t->cap - 1;
    Entry *e;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        e = &t->slots[i];
        if (!e->hash) {
            t->used++;
            break;
        }
        if (e->hash == h && e->keylen == (size_t)keylen && memcmp(e->key, key, (size_t)keylen) == 0) {
            entry_free(e);
            break;
        }
    }
    e->key = copy_bytes(key, keylen);
    e->keylen = (size_t)keylen;
    e->hash = h;
    return e;
}

static int Table_init(Table *self, PyObject *args, PyObject *kw) {
    self->cap = MINCAP;
    self->slots = calloc(self->cap, sizeof(Entry));
    self->used = 0;
    return self->slots ? 0 : -1;
}

static void Table_dealloc(Table *self) {
    if (self->slots) {
        table_clear_all(self);
        free(self->slots);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Table_put(Table *self, PyObject *args) {
    const char *key, *body;
    Py_ssize_t keylen, bodylen;
    if (!PyArg_ParseTuple(args, "y#y#", &key, &keylen, &body, &bodylen)) return NULL;
    if (keylen + 2 > MAXPKT || bodylen + 2 > MAXPKT) Py_RETURN_NONE;
    Entry *e = table_claim(self, key, keylen);
    e->body = copy_bytes(body, bodylen);
    e->bodylen = (size_t)bodylen;
    Py_RETURN_NONE;
}

static PyObject *Table_put_shuffled(Table *self, PyObject *args) {
    const char *key, *head, *tail;
    Py_ssize_t keylen, headlen, taillen;
    PyObject *chunks;
    if (!PyArg_ParseTuple(args, "y#y#O!y#", &key, &keylen, &head, &headlen, &PyList_Type, &chunks, &tail, &taillen))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(chunks);
    if (n < 1 || n > MAXCHUNKS) Py_RETURN_NONE;
    Py_ssize_t size = PyBytes_Size(PyList_GET_ITEM(chunks, 0));
    if (size < 0) return NULL;
    if (keylen + 2 > MAXPKT || 2 + headlen + n * size + taillen > MAXPKT) Py_RETURN_NONE;
    unsigned char *all = malloc((size_t)(n * size));
    if (!all) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GET_ITEM(chunks, i);
        if (!PyBytes_Check(c) || PyBytes_GET_SIZE(c) != size) {
            free(all);
            PyErr_SetString(PyExc_ValueError, "records must be bytes of one size");
            return NULL;
        }
        memcpy(all + i * size, PyBytes_AS_STRING(c), (size_t)size);
    }
    Entry *e = table_claim(self, key, keylen);
    e->body = copy_bytes(head, headlen);
    e->bodylen = (size_t)headlen;
    e->chunks = all;
    e->nchunks = (int)n;
    e->chunklen = (size_t)size;
    e->tail = copy_bytes(tail, taillen);
    e->taillen = (size_t)taillen;
    Py_RETURN_NONE;
}

static PyObject *Table_clear(Table *self, PyObject *unused) {
    table_clear_all(self);
    Py_RETURN_NONE;
}

static Py_ssize_t Table_len(Table *self) { return (Py_ssize_t)self->used; }

static PyMethodDef Table_methods[] = {
    {"put", (PyCFunction)Table_put, METH_VARARGS, "put(key, body)"},
    {"put_shuffled", (PyCFunction)Table_put_shuffled, METH_VARARGS, "put_shuffled(key, head, chunks, tail)"},
    {"clear", (PyCFunction)Table_clear, METH_NOARGS, "forget every answer"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Table_seq = {.sq_length = (lenfunc)Table_len};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastdns.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Table_init,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_as_sequence = &Table_seq,
};

/* Build the answer for one cached query into out; returns its length. */
static size_t render(const Entry *e, const unsigned char *query, unsigned char *out) {
    size_t n = 0;
    out[n++] = query[0];
    out[n++] = query[1];
    memcpy(out + n, e->body, e->bodylen);
    n += e->bodylen;
    if (e->nchunks) {
        int order[MAXCHUNKS];
        for (int i = 0; i < e->nchunks; i++) order[i] = i;
        for (int i = e->nchunks - 1; i > 0; i--) { /* Fisher-Yates */
            int j = (int)(xorshift() % (uint64_t)(i + 1));
            int tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        for (int i = 0; i < e->nchunks; i++) {
            memcpy(out + n, e->chunks + (size_t)order[i] * e->chunklen, e->chunklen);
            n += e->chunklen;
        }
        memcpy(out + n, e->tail, e->taillen);
        n += e->taillen;
    }
    return n;
}

static PyObject *addr_tuple(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo), a->sin6_scope_id);
    }
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return Py_BuildValue("(si)", host, ntohs(a->sin_port));
}

static unsigned char inbuf[BATCH][MAXPKT];
static unsigned char outbuf[BATCH][MAXPKT];

static PyObject *serve(PyObject *mod, PyObject *args) {
    int fd;
    Table *t;
    if (!PyArg_ParseTuple(args, "iO!", &fd, &TableType, &t)) return NULL;
    struct mmsghdr in[BATCH], out[BATCH];
    struct iovec iov_in[BATCH], iov_out[BATCH];
    struct sockaddr_storage from[BATCH];
    int miss_idx[BATCH];
    int got, nmiss = 0, nout = 0;
    memset(in, 0, sizeof in);
    for (int i = 0; i < BATCH; i++) {
        iov_in[i].iov_base = inbuf[i];
        iov_in[i].iov_len = MAXPKT;
        in[i].msg_hdr.msg_iov = &iov_in[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &from[i];
        in[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    Py_BEGIN_ALLOW_THREADS
    got = recvmmsg(fd, in, BATCH, MSG_DONTWAIT, NULL);
    if (got > 0) {
        memset(out, 0, sizeof out);
        for (int i = 0; i < got; i++) {
            size_t len = in[i].msg_len;
            Entry *e = NULL;
            if (len > 12 && len <= MAXPKT && !(inbuf[i][2] & 0x80))
                e = table_find(t, inbuf[i] + 2, len - 2, fnv1a(inbuf[i] + 2, len - 2));
            if (!e) {
                miss_idx[nmiss++] = i;
                continue;
            }
            iov_out[nout].iov_base = outbuf[nout];
            iov_out[nout].iov_len = render(e, inbuf[i], outbuf[nout]);
            out[nout].msg_hdr.msg_iov = &iov_out[nout];
            out[nout].msg_hdr.msg_iovlen = 1;
            out[nout].msg_hdr.msg_name = &from[i];
            out[nout].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
            nout++;
        }
        for (int sent = 0; sent < nout;) {
            int r = sendmmsg(fd, out + sent, (unsigned)(nout - sent), MSG_DONTWAIT);
            if (r <= 0) break; /* a full socket buffer: the client retries, as with any UDP loss */
            sent += r;
        }
    }
    Py_END_ALLOW_THREADS
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return Py_BuildValue("(i[])", 0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *misses = PyList_New(nmiss);
    if (!misses) return NULL;
    for (int k = 0; k < nmiss; k++) {
        int i = miss_idx[k];
        PyObject *item = Py_BuildValue("(y#N)", (const char *)inbuf[i], (Py_ssize_t)in[i].msg_len, addr_tuple(&from[i]));
        if (!item) {
            Py_DECREF(misses);
            return NULL;
        }
        PyList_SET_ITEM(misses, k, item);
    }
    return Py_BuildValue("(iN)", nout, misses);
}

static PyMethodDef module_methods[] = {
    {"serve", serve, METH_VARARGS, "serve(fd, table) -> (hits, [(datagram, address), ...])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_fastdns", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__fastdns(void) {
    if (PyType_Ready(&TableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&TableType);
    PyModule_AddObject(m, "Table", (PyObject *)&TableType);
    return m;
}
