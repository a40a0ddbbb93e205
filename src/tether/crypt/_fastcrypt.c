/*
 * _fastcrypt: tether-crypt's per-frame work in C (a CPython extension, built on first use
 * like the DNS fast path; AES-256-GCM from OpenSSL's libcrypto, never our own crypto).
 *
 * Python (datapath.py) decides everything: which MAC lives on which node, which key seals
 * what, which sender is current, what to do with anything unusual.  It hands this module
 * its decisions as small objects, and the module then moves the common frames without
 * going back to the interpreter:
 *
 *   TxRoute(key|None, peer_ip, port, vni, epoch)
 *       where a frame for one remote MAC goes, sealed with which key (None: no key yet)
 *   Sender(session) .configure(sock_fd, seg) .counter
 *       .pump(tap_fd, routes, counters) -> (status, frames, extra)
 *       reads frames from a TAP, looks up their destination MAC in `routes`
 *       ({6-byte MAC: TxRoute}), seals each with one AEAD call and sends it as MTU-sized
 *       datagrams with one UDP GSO sendmsg (wire.py's format).  Multicast and broadcast
 *       frames (ARP, neighbour solicitations) go back to Python (status FRAME, the bytes).
 *   RxRoute(key, tap_fd, counters)
 *       one sender (network, epoch, node, session): its opening key and replay window
 *       .check(counter) .accept(counter) .open_into(counter, ct, aad, out) -> bool
 *       .active (Python clears it when the sender or the epoch is no longer current)
 *   Receiver().configure(sock_fd, seg)
 *       .pump(routes) -> (status, frames, extra)
 *       receives (UDP GRO: the datagrams of one GSO send in one buffer); a buffer that is
 *       one whole frame of an active sender in `routes` ({src IPv4 + header bytes 4..19:
 *       RxRoute}) is checked against the replay window, opened and written to the TAP;
 *       anything else goes back to Python (status BUFFER, (src, n, seg, bytes)).
 *
 * Counters are the network's array('Q') (datapath.COUNTERS order; the indexes below must
 * match it, and datapath.py checks COUNTERS against this module's before using it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define MAGIC 0xE1
#define KIND_DATA 0
#define HEADER_LEN 28
#define TAIL_LEN 24   /* header bytes 4..27: the associated data */
#define TAG_LEN 16
#define KEY_LEN 32
#define VNET_HDR_LEN 10
#define ETH_LEN 14
#define MAX_SEGMENTS 255
#define MAX_UDP_PAYLOAD 65507
#define READ_SIZE (65536 + VNET_HDR_LEN + ETH_LEN + 64)
#define RECV_SIZE (1 << 18)
#define MAX_RECEIVE 65536
#define BATCH 64
#define WINDOW 4096 /* wire.REPLAY_WINDOW */
#define WORDS (WINDOW / 64)

/* Statuses of pump(). */
#define ST_DRAINED 0 /* nothing more to read now */
#define ST_BATCH 1   /* BATCH done: the other side gets its turn */
#define ST_FRAME 2   /* Sender: a frame for Python (extra: its bytes) */
#define ST_BUFFER 2  /* Receiver: a buffer for Python (extra: (src, n, seg, bytes)) */
#define ST_GONE 3    /* Sender: the TAP went away (EBADFD) */
#define ST_ERROR 4   /* extra: errno */

/* The counters this module touches: their places in datapath.COUNTERS. */
enum {
    C_RX_PACKETS,
    C_RX_BYTES,
    C_TX_PACKETS,
    C_TX_BYTES,
    C_PROXY_REPLIES,
    C_RX_MALFORMED,
    C_RX_UNKNOWN_NETWORK,
    C_RX_UNKNOWN_EPOCH,
    C_RX_UNKNOWN_SENDER,
    C_RX_REPLAYED,
    C_RX_AUTH_FAILED,
    C_RX_INCOMPLETE,
    C_RX_BAD_FRAME,
    C_TX_NO_ROUTE,
    C_TX_NO_KEY,
    C_TX_MULTICAST,
    C_TX_SEND_FAILED,
    C_COUNT
};
static const char *counter_names[C_COUNT] = {
    "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "proxy_replies",
    "rx_drop_malformed", "rx_drop_unknown_network", "rx_drop_unknown_epoch",
    "rx_drop_unknown_sender", "rx_drop_replayed", "rx_drop_auth_failed",
    "rx_drop_incomplete", "rx_drop_bad_frame", "tx_drop_no_route", "tx_drop_no_key",
    "tx_drop_multicast", "tx_drop_send_failed",
};

/* A network's counters: the writable buffer of an array('Q') of C_COUNT items, held (and
 * its buffer pinned: an exported array cannot be resized) as long as a route uses it. */
typedef struct {
    PyObject *obj;
    Py_buffer view;
    uint64_t *c;
} Counters;

static int counters_get(Counters *k, PyObject *obj) {
    if (PyObject_GetBuffer(obj, &k->view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
        return -1;
    if (k->view.len != (Py_ssize_t)(C_COUNT * sizeof(uint64_t)) || k->view.itemsize != 8) {
        PyBuffer_Release(&k->view);
        PyErr_SetString(PyExc_ValueError, "counters: an array('Q') of the COUNTERS");
        return -1;
    }
    k->obj = obj;
    k->c = (uint64_t *)k->view.buf;
    return 0;
}

static void counters_release(Counters *k) {
    if (k->obj != NULL) {
        PyBuffer_Release(&k->view);
        k->obj = NULL;
        k->c = NULL;
    }
}

static EVP_CIPHER_CTX *aead_new(const unsigned char *key, int enc) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL, enc) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void nonce_of(unsigned char nonce[12], uint64_t counter) {
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (unsigned char)(counter >> (56 - 8 * i));
}

/* One AEAD call: `len` bytes of `in` sealed into `out` (len + TAG_LEN bytes). */
static int seal(EVP_CIPHER_CTX *ctx, uint64_t counter, const unsigned char *aad,
                const unsigned char *in, int len, unsigned char *out) {
    unsigned char nonce[12];
    int n = 0, m = 0;
    nonce_of(nonce, counter);
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, aad, TAIL_LEN) != 1 ||
        EVP_EncryptUpdate(ctx, out, &n, in, len) != 1 ||
        EVP_EncryptFinal_ex(ctx, out + n, &m) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + len) != 1)
        return -1;
    return 0;
}

/* Opens `len` bytes of `in` (tag included) into `out`; 0 if the tag verified. */
static int open_(EVP_CIPHER_CTX *ctx, uint64_t counter, const unsigned char *aad,
                 const unsigned char *in, int len, unsigned char *out) {
    unsigned char nonce[12];
    int n = 0, m = 0, plain = len - TAG_LEN;
    if (plain < 0)
        return -1;
    nonce_of(nonce, counter);
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, aad, TAIL_LEN) != 1 ||
        EVP_DecryptUpdate(ctx, out, &n, in, plain) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(in + plain)) != 1)
        return -1;
    return EVP_DecryptFinal_ex(ctx, out + n, &m) == 1 ? 0 : -1;
}

static uint64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

static void put_be64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static int key_arg(Py_buffer *key) {
    if (key->len != KEY_LEN) {
        PyErr_SetString(PyExc_ValueError, "a key is 32 bytes");
        return -1;
    }
    return 0;
}

/* configure(sock_fd, seg): the data socket and the size of a full datagram. */
static int configure_args(PyObject *args, int *sock, int *seg) {
    if (!PyArg_ParseTuple(args, "ii", sock, seg))
        return -1;
    if (*seg <= HEADER_LEN || *seg > MAX_UDP_PAYLOAD) {
        PyErr_SetString(PyExc_ValueError, "bad datagram size");
        return -1;
    }
    return 0;
}

/* ---- TxRoute ----------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx; /* NULL: no key for this peer yet (counted as no_key) */
    struct sockaddr_in to;
    uint32_t vni, epoch;
} TxRoute;

static int TxRoute_init(TxRoute *self, PyObject *args, PyObject *kw) {
    PyObject *key;
    const char *ip;
    int port;
    unsigned int vni, epoch;
    if (!PyArg_ParseTuple(args, "OsiII", &key, &ip, &port, &vni, &epoch))
        return -1;
    if (self->ctx != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a TxRoute is made once");
        return -1;
    }
    memset(&self->to, 0, sizeof(self->to));
    self->to.sin_family = AF_INET;
    self->to.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &self->to.sin_addr) != 1 || port <= 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "bad peer %s:%d", ip, port);
        return -1;
    }
    self->vni = vni;
    self->epoch = epoch;
    if (key != Py_None) {
        Py_buffer kb;
        if (PyObject_GetBuffer(key, &kb, PyBUF_SIMPLE) < 0)
            return -1;
        if (key_arg(&kb) < 0) {
            PyBuffer_Release(&kb);
            return -1;
        }
        self->ctx = aead_new(kb.buf, 1);
        PyBuffer_Release(&kb);
        if (self->ctx == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM unavailable in libcrypto");
            return -1;
        }
    }
    return 0;
}

static void TxRoute_dealloc(TxRoute *self) {
    if (self->ctx != NULL)
        EVP_CIPHER_CTX_free(self->ctx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject TxRouteType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastcrypt.TxRoute",
    .tp_basicsize = sizeof(TxRoute),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TxRoute_init,
    .tp_dealloc = (destructor)TxRoute_dealloc,
};

/* ---- Sender ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int sock;
    int seg, chunk, group;
    uint64_t session, counter;
    unsigned char *frame;  /* READ_SIZE: what the TAP gave */
    unsigned char *sealed; /* READ_SIZE + TAG_LEN */
    unsigned char *hdrs;   /* MAX_SEGMENTS headers */
    struct iovec iov[2 * MAX_SEGMENTS];
} Sender;

static int Sender_init(Sender *self, PyObject *args, PyObject *kw) {
    unsigned long long session;
    if (!PyArg_ParseTuple(args, "K", &session))
        return -1;
    /* Once: made again, it would count from 0 under the same keys (nonces reused). */
    if (self->frame != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Sender is made once");
        return -1;
    }
    self->session = session;
    self->counter = 0;
    self->sock = -1;
    self->frame = PyMem_Malloc(READ_SIZE);
    self->sealed = PyMem_Malloc(READ_SIZE + TAG_LEN);
    self->hdrs = PyMem_Malloc(MAX_SEGMENTS * HEADER_LEN);
    if (self->frame == NULL || self->sealed == NULL || self->hdrs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Sender_dealloc(Sender *self) {
    PyMem_Free(self->frame);
    PyMem_Free(self->sealed);
    PyMem_Free(self->hdrs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Sender_configure(Sender *self, PyObject *args) {
    int sock, seg;
    if (self->frame == NULL || self->sealed == NULL || self->hdrs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sender not made");
        return NULL;
    }
    if (configure_args(args, &sock, &seg) < 0)
        return NULL;
    self->sock = sock;
    self->seg = seg;
    self->chunk = seg - HEADER_LEN;
    self->group = MAX_UDP_PAYLOAD / seg;
    if (self->group < 1)
        self->group = 1;
    Py_RETURN_NONE;
}

/* Seals one frame of `len` bytes (self->frame) for `r` and sends it.  0, or an errno. */
static int send_frame(Sender *self, TxRoute *r, int len) {
    int sealed = len + TAG_LEN;
    int chunk = self->chunk;
    int count = (sealed + chunk - 1) / chunk;
    unsigned char tail[TAIL_LEN];
    if (count > MAX_SEGMENTS)
        return EMSGSIZE;
    uint64_t counter = ++self->counter;
    put_be32(tail, r->vni);
    put_be32(tail + 4, r->epoch);
    put_be64(tail + 8, self->session);
    put_be64(tail + 16, counter);
    if (seal(r->ctx, counter, tail, self->frame, len, self->sealed) < 0)
        return EIO;
    for (int i = 0; i < count; i++) {
        unsigned char *h = self->hdrs + i * HEADER_LEN;
        h[0] = MAGIC, h[1] = KIND_DATA, h[2] = (unsigned char)i, h[3] = (unsigned char)count;
        memcpy(h + 4, tail, TAIL_LEN);
        int off = i * chunk;
        int size = sealed - off < chunk ? sealed - off : chunk;
        self->iov[2 * i].iov_base = h;
        self->iov[2 * i].iov_len = HEADER_LEN;
        self->iov[2 * i + 1].iov_base = self->sealed + off;
        self->iov[2 * i + 1].iov_len = size;
    }
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } u;
    for (int first = 0; first < count; first += self->group) {
        int k = count - first < self->group ? count - first : self->group;
        struct msghdr msg = {0};
        msg.msg_name = &r->to;
        msg.msg_namelen = sizeof(r->to);
        msg.msg_iov = self->iov + 2 * first;
        msg.msg_iovlen = 2 * k;
        if (k > 1) {
            memset(&u, 0, sizeof(u));
            msg.msg_control = u.buf;
            msg.msg_controllen = sizeof(u.buf);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_UDP;
            cm->cmsg_type = UDP_SEGMENT;
            cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t seg = (uint16_t)self->seg;
            memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
        }
        if (sendmsg(self->sock, &msg, 0) < 0)
            return errno ? errno : EIO;
    }
    return 0;
}

static PyObject *Sender_pump(Sender *self, PyObject *args) {
    int fd;
    PyObject *routes, *counters;
    if (!PyArg_ParseTuple(args, "iO!O", &fd, &PyDict_Type, &routes, &counters))
        return NULL;
    if (self->sock < 0 || self->frame == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sender not configured");
        return NULL;
    }
    /* The network's own counters, for what has no route (so no route's counters). */
    Counters net = {0};
    if (counters_get(&net, counters) < 0)
        return NULL;
    PyObject *res = NULL;
    int frames = 0;
    int last_err = 0;
    for (; frames < BATCH; frames++) {
        ssize_t n = read(fd, self->frame, READ_SIZE);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                res = Py_BuildValue("iii", ST_DRAINED, frames, last_err);
            else if (errno == EBADFD)
                res = Py_BuildValue("iii", ST_GONE, frames, EBADFD);
            else
                res = Py_BuildValue("iii", ST_ERROR, frames, errno);
            goto done;
        }
        if (n < VNET_HDR_LEN + ETH_LEN)
            continue;
        const unsigned char *dst = self->frame + VNET_HDR_LEN;
        if (dst[0] & 1) { /* multicast or broadcast: Python answers (ARP, ND) or drops */
            res = Py_BuildValue("iiy#", ST_FRAME, frames + 1, (const char *)self->frame, n);
            goto done;
        }
        PyObject *mac = PyBytes_FromStringAndSize((const char *)dst, 6);
        if (mac == NULL)
            goto done;
        PyObject *found = PyDict_GetItemWithError(routes, mac);
        Py_DECREF(mac);
        if (found == NULL) {
            if (PyErr_Occurred())
                goto done;
            net.c[C_TX_NO_ROUTE]++;
            continue;
        }
        if (!PyObject_TypeCheck(found, &TxRouteType)) {
            PyErr_SetString(PyExc_TypeError, "routes: {MAC: TxRoute}");
            goto done;
        }
        TxRoute *r = (TxRoute *)found;
        if (r->ctx == NULL) {
            net.c[C_TX_NO_KEY]++;
            continue;
        }
        int err = send_frame(self, r, (int)n);
        if (err != 0) {
            net.c[C_TX_SEND_FAILED]++;
            last_err = err;
            continue;
        }
        net.c[C_TX_PACKETS]++;
        net.c[C_TX_BYTES] += (uint64_t)(n - VNET_HDR_LEN);
    }
    res = Py_BuildValue("iii", ST_BATCH, frames, last_err);
done:
    counters_release(&net);
    return res;
}

/* For Python's own sends (the reference path): the next counter, shared with pump(). */
static PyObject *Sender_next(Sender *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(++self->counter);
}

static PyObject *Sender_get_counter(Sender *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->counter);
}

static PyMethodDef Sender_methods[] = {
    {"configure", (PyCFunction)Sender_configure, METH_VARARGS, "configure(sock_fd, seg)"},
    {"pump", (PyCFunction)Sender_pump, METH_VARARGS, "pump(tap_fd, routes, counters)"},
    {"next", (PyCFunction)Sender_next, METH_NOARGS, "the next counter"},
    {NULL},
};

static PyGetSetDef Sender_getset[] = {
    {"counter", (getter)Sender_get_counter, NULL, "the last counter used", NULL},
    {NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastcrypt.Sender",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_methods = Sender_methods,
    .tp_getset = Sender_getset,
};

/* ---- RxRoute ----------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    int fd;
    int active;
    uint64_t top; /* the newest counter accepted (all 64 bits: as wire.ReplayWindow) */
    int any;      /* one was accepted */
    uint64_t bits[WORDS]; /* counter c accepted (within the window): bit c % WINDOW */
    Counters k;
} RxRoute;

static int RxRoute_init(RxRoute *self, PyObject *args, PyObject *kw) {
    Py_buffer kb;
    int fd;
    PyObject *counters;
    if (!PyArg_ParseTuple(args, "y*iO", &kb, &fd, &counters))
        return -1;
    if (self->ctx != NULL || self->k.obj != NULL) {
        PyBuffer_Release(&kb);
        PyErr_SetString(PyExc_RuntimeError, "an RxRoute is made once");
        return -1;
    }
    if (key_arg(&kb) < 0) {
        PyBuffer_Release(&kb);
        return -1;
    }
    self->ctx = aead_new(kb.buf, 0);
    PyBuffer_Release(&kb);
    if (self->ctx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM unavailable in libcrypto");
        return -1;
    }
    if (counters_get(&self->k, counters) < 0)
        return -1;
    Py_INCREF(counters);
    self->fd = fd;
    self->active = 1;
    self->top = 0;
    self->any = 0;
    memset(self->bits, 0, sizeof(self->bits));
    return 0;
}

static void RxRoute_dealloc(RxRoute *self) {
    if (self->ctx != NULL)
        EVP_CIPHER_CTX_free(self->ctx);
    PyObject *obj = self->k.obj;
    counters_release(&self->k);
    Py_XDECREF(obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The replay window (RFC 6479's ring of bits: no shifting).  check before opening, accept
 * after the tag verified: a forged packet never moves the window. */
static int window_check(RxRoute *r, uint64_t counter) {
    if (!r->any || counter > r->top)
        return 1;
    uint64_t behind = r->top - counter;
    if (behind >= WINDOW)
        return 0;
    uint64_t i = counter % WINDOW;
    return !((r->bits[i / 64] >> (i % 64)) & 1);
}

static void window_accept(RxRoute *r, uint64_t counter) {
    if (!r->any || counter > r->top) {
        if (!r->any || counter - r->top > WINDOW) {
            memset(r->bits, 0, sizeof(r->bits));
        } else {
            for (uint64_t c = r->top + 1; c < counter; c++) {
                uint64_t i = c % WINDOW;
                r->bits[i / 64] &= ~(1ull << (i % 64));
            }
        }
        r->top = counter;
        r->any = 1;
    }
    uint64_t i = counter % WINDOW;
    r->bits[i / 64] |= 1ull << (i % 64);
}

static PyObject *RxRoute_check(RxRoute *self, PyObject *arg) {
    unsigned long long c = PyLong_AsUnsignedLongLong(arg);
    if (c == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(window_check(self, c));
}

static PyObject *RxRoute_accept(RxRoute *self, PyObject *arg) {
    unsigned long long c = PyLong_AsUnsignedLongLong(arg);
    if (c == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    window_accept(self, c);
    Py_RETURN_NONE;
}

static PyObject *RxRoute_open_into(RxRoute *self, PyObject *args) {
    unsigned long long counter;
    Py_buffer ct, aad, out;
    if (!PyArg_ParseTuple(args, "Ky*y*w*", &counter, &ct, &aad, &out))
        return NULL;
    int ok = -1;
    if (self->ctx == NULL)
        PyErr_SetString(PyExc_RuntimeError, "RxRoute not made");
    else if (aad.len != TAIL_LEN || ct.len < TAG_LEN || out.len < ct.len - TAG_LEN)
        PyErr_SetString(PyExc_ValueError, "open_into: bad sizes");
    else
        ok = open_(self->ctx, counter, aad.buf, ct.buf, (int)ct.len, out.buf) == 0;
    PyBuffer_Release(&ct);
    PyBuffer_Release(&aad);
    PyBuffer_Release(&out);
    if (ok < 0)
        return NULL;
    return PyBool_FromLong(ok);
}

static PyObject *RxRoute_get_active(RxRoute *self, void *c) { return PyBool_FromLong(self->active); }
static int RxRoute_set_active(RxRoute *self, PyObject *v, void *c) {
    int t = PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    /* The receiver opens only with an active route: never one without its key. */
    if (t && (self->ctx == NULL || self->k.c == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "RxRoute not made");
        return -1;
    }
    self->active = t;
    return 0;
}
static PyObject *RxRoute_get_fd(RxRoute *self, void *c) { return PyLong_FromLong(self->fd); }
static int RxRoute_set_fd(RxRoute *self, PyObject *v, void *c) {
    long fd = PyLong_AsLong(v);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    self->fd = (int)fd;
    return 0;
}

static PyMethodDef RxRoute_methods[] = {
    {"check", (PyCFunction)RxRoute_check, METH_O, "check(counter): not replayed"},
    {"accept", (PyCFunction)RxRoute_accept, METH_O, "accept(counter)"},
    {"open_into", (PyCFunction)RxRoute_open_into, METH_VARARGS,
     "open_into(counter, ct, aad, out) -> the tag verified"},
    {NULL},
};

static PyGetSetDef RxRoute_getset[] = {
    {"active", (getter)RxRoute_get_active, (setter)RxRoute_set_active, NULL, NULL},
    {"fd", (getter)RxRoute_get_fd, (setter)RxRoute_set_fd, NULL, NULL},
    {NULL},
};

static PyTypeObject RxRouteType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastcrypt.RxRoute",
    .tp_basicsize = sizeof(RxRoute),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RxRoute_init,
    .tp_dealloc = (destructor)RxRoute_dealloc,
    .tp_methods = RxRoute_methods,
    .tp_getset = RxRoute_getset,
};

/* ---- Receiver ---------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int sock;
    int seg, chunk, segments;
    unsigned char *hdrs;  /* a header per datagram */
    unsigned char *ct;    /* the chunks, end to end: the ciphertext, whole */
    unsigned char *plain; /* frames are opened here */
    struct iovec *iov;
} Receiver;

static int Receiver_init(Receiver *self, PyObject *args, PyObject *kw) {
    self->sock = -1;
    if (self->ct == NULL) {
        self->ct = PyMem_Malloc(RECV_SIZE);
        self->plain = PyMem_Malloc(RECV_SIZE);
        if (self->ct == NULL || self->plain == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void Receiver_dealloc(Receiver *self) {
    PyMem_Free(self->ct);
    PyMem_Free(self->plain);
    PyMem_Free(self->hdrs);
    PyMem_Free(self->iov);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Receiver_configure(Receiver *self, PyObject *args) {
    int sock, seg;
    if (self->ct == NULL || self->plain == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Receiver not made");
        return NULL;
    }
    if (configure_args(args, &sock, &seg) < 0)
        return NULL;
    int chunk = seg - HEADER_LEN;
    /* Enough datagrams for the largest receive (64 KiB of them, or one of any size). */
    int segments = (MAX_RECEIVE + seg - 1) / seg + 1;
    if ((size_t)segments * chunk > RECV_SIZE)
        segments = RECV_SIZE / chunk;
    unsigned char *hdrs = PyMem_Malloc((size_t)segments * HEADER_LEN);
    struct iovec *iov = PyMem_Malloc(sizeof(struct iovec) * 2 * segments);
    if (hdrs == NULL || iov == NULL) {
        PyMem_Free(hdrs);
        PyMem_Free(iov);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < segments; i++) {
        iov[2 * i].iov_base = hdrs + i * HEADER_LEN;
        iov[2 * i].iov_len = HEADER_LEN;
        iov[2 * i + 1].iov_base = self->ct + (size_t)i * chunk;
        iov[2 * i + 1].iov_len = chunk;
    }
    PyMem_Free(self->hdrs);
    PyMem_Free(self->iov);
    self->hdrs = hdrs;
    self->iov = iov;
    self->sock = sock;
    self->seg = seg;
    self->chunk = chunk;
    self->segments = segments;
    Py_RETURN_NONE;
}

/* The `n` bytes of a receive, as they came (headers and chunks interleaved again). */
static PyObject *gathered(Receiver *self, int n) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    for (int i = 0; n > 0 && i < 2 * self->segments; i++) {
        int take = (int)self->iov[i].iov_len < n ? (int)self->iov[i].iov_len : n;
        memcpy(p, self->iov[i].iov_base, take);
        p += take;
        n -= take;
    }
    return out;
}

static PyObject *Receiver_pump(Receiver *self, PyObject *args) {
    PyObject *routes;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &routes))
        return NULL;
    if (self->sock < 0 || self->iov == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Receiver not configured");
        return NULL;
    }
    const int seg_ours = self->seg;
    int frames = 0;
    for (; frames < BATCH; frames++) {
        struct sockaddr_in from;
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr msg = {0};
        msg.msg_name = &from;
        msg.msg_namelen = sizeof(from);
        msg.msg_iov = self->iov;
        msg.msg_iovlen = 2 * self->segments;
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof(u.buf);
        ssize_t got = recvmsg(self->sock, &msg, MSG_DONTWAIT);
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return Py_BuildValue("iii", ST_DRAINED, frames, 0);
            return Py_BuildValue("iii", ST_ERROR, frames, errno);
        }
        int n = (int)got;
        int seg = n;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
                int v;
                memcpy(&v, CMSG_DATA(cm), sizeof(v));
                seg = v;
            }
        }
        char src[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &from.sin_addr, src, sizeof(src));
        int k = seg > 0 ? (n + seg - 1) / seg : 0;
        RxRoute *r = NULL;
        const unsigned char *h = self->hdrs;
        const unsigned char *lh = self->hdrs + (k > 0 ? (k - 1) : 0) * HEADER_LEN;
        /* The usual case: the whole of one frame, in order, laid out as we expect (headers
         * in hdrs, chunks end to end in ct), from a sender we know. */
        if (seg > HEADER_LEN && (seg == seg_ours || (k == 1 && n <= seg_ours)) &&
            k <= self->segments &&
            h[0] == MAGIC && h[1] == KIND_DATA && h[2] == 0 && h[3] == k &&
            n - (k - 1) * seg > HEADER_LEN &&
            (k == 1 || (lh[0] == MAGIC && lh[2] == k - 1 && lh[3] == k &&
                        memcmp(lh + 4, h + 4, TAIL_LEN) == 0))) {
            unsigned char key[20];
            memcpy(key, &from.sin_addr, 4);
            memcpy(key + 4, h + 4, 16);
            PyObject *kb = PyBytes_FromStringAndSize((const char *)key, sizeof(key));
            if (kb == NULL)
                return NULL;
            PyObject *found = PyDict_GetItemWithError(routes, kb);
            Py_DECREF(kb);
            if (found == NULL && PyErr_Occurred())
                return NULL;
            if (found != NULL && PyObject_TypeCheck(found, &RxRouteType) &&
                ((RxRoute *)found)->active)
                r = (RxRoute *)found;
        }
        if (r == NULL) {
            PyObject *data = gathered(self, n);
            if (data == NULL)
                return NULL;
            return Py_BuildValue("ii(siiN)", ST_BUFFER, frames + 1, src, n, seg, data);
        }
        int ctlen = n - k * HEADER_LEN;
        uint64_t counter = be64(h + 20);
        if (!window_check(r, counter)) {
            r->k.c[C_RX_REPLAYED]++;
            continue;
        }
        int size = ctlen - TAG_LEN;
        if (size < VNET_HDR_LEN + ETH_LEN) {
            r->k.c[size < 0 ? C_RX_AUTH_FAILED : C_RX_BAD_FRAME]++;
            continue;
        }
        if (open_(r->ctx, counter, h + 4, self->ct, ctlen, self->plain) != 0) {
            r->k.c[C_RX_AUTH_FAILED]++;
            continue;
        }
        window_accept(r, counter);
        if (r->fd < 0 || write(r->fd, self->plain, size) < 0) {
            /* No TAP, or the kernel refused the frame (a virtio-net header it does not take). */
            r->k.c[C_RX_BAD_FRAME]++;
            continue;
        }
        r->k.c[C_RX_PACKETS]++;
        r->k.c[C_RX_BYTES] += (uint64_t)(size - VNET_HDR_LEN);
    }
    return Py_BuildValue("iii", ST_BATCH, frames, 0);
}

static PyMethodDef Receiver_methods[] = {
    {"configure", (PyCFunction)Receiver_configure, METH_VARARGS, "configure(sock_fd, seg)"},
    {"pump", (PyCFunction)Receiver_pump, METH_VARARGS, "pump(routes)"},
    {NULL},
};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_fastcrypt.Receiver",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Receiver_init,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_methods = Receiver_methods,
};

/* ---- the module -------------------------------------------------------------------- */

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_fastcrypt", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fastcrypt(void) {
    PyTypeObject *types[] = {&TxRouteType, &SenderType, &RxRouteType, &ReceiverType};
    const char *names[] = {"TxRoute", "Sender", "RxRoute", "Receiver"};
    for (int i = 0; i < 4; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    for (int i = 0; i < 4; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0)
            return NULL;
    }
    PyObject *names_t = PyTuple_New(C_COUNT);
    if (names_t == NULL)
        return NULL;
    for (int i = 0; i < C_COUNT; i++)
        PyTuple_SET_ITEM(names_t, i, PyUnicode_FromString(counter_names[i]));
    if (PyModule_AddObject(m, "COUNTERS", names_t) < 0)
        return NULL;
    PyModule_AddIntConstant(m, "DRAINED", ST_DRAINED);
    PyModule_AddIntConstant(m, "BATCH", ST_BATCH);
    PyModule_AddIntConstant(m, "FRAME", ST_FRAME);
    PyModule_AddIntConstant(m, "BUFFER", ST_BUFFER);
    PyModule_AddIntConstant(m, "GONE", ST_GONE);
    PyModule_AddIntConstant(m, "ERROR", ST_ERROR);
    PyModule_AddIntConstant(m, "WINDOW", WINDOW);
    return m;
}
