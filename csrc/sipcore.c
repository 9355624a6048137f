/*
 * gateway._sipcore: the gateway's SIP signalling engine, below pjsua.
 *
 * pjsua's call layer is built for an endpoint: it runs every SDP through its
 * offer/answer negotiator and opens a media stream per call. A gateway that
 * carries SDP across cannot live with that (183 with one SDP then 200 with
 * another, late offer, offerless re-INVITEs, forking all trip the negotiator),
 * so this module drives pjsip's dialog and transaction layers directly and
 * treats every body as opaque bytes. pjsua2 still owns the endpoint, the
 * transports and the log; this module registers two pjsip modules into that
 * same endpoint (it links to pjsua2's _pjsua2.so, so there is one pjsip).
 *
 * Shape (see gateway/engine.py for the Python side):
 *   - A *leg* is one dialog: the bridge side (we are UAS) or the trunk side
 *     (we are UAC). Python holds legs by integer id; an id that no longer
 *     names a live leg is refused (False / ValueError), never dereferenced.
 *   - pjsip callbacks never call Python. They append *events* to a C queue;
 *     `poll()` runs pjsip with the GIL released, then hands each event to the
 *     Python handler. Actions Python takes while handling an event may queue
 *     further events, which the same `poll()` delivers before returning. So
 *     Python code is never re-entered and nothing Python does can happen
 *     inside a pjsip callback.
 *   - What is protocol, not policy, is done here: 100 Trying, 200 to CANCEL
 *     and 487 to the INVITE, 200 to BYE, PRACK for reliable provisionals,
 *     digest retries, ACK retransmission, CANCEL held until a provisional,
 *     491/500 for overlapping re-INVITEs, 403 to REFER, stateless answers to
 *     requests outside any dialog, and the trusted-source filter.
 *
 * Threading: everything runs on the thread that calls poll() (pjsua with
 * threadCnt=0). `wakeup()` is the one function other threads may call.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pjsua-lib/pjsua.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <strings.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define THIS_FILE "sipcore"

/* ------------------------------------------------------------------------ */
/* Event kinds (mirrored in gateway/engine.py).                              */

enum {
    EV_INVITE = 1,        /* new INVITE outside a dialog: fields raw, src host, transport; code = src port */
    EV_PROVISIONAL = 2,   /* UAC: 101-199 to the initial INVITE: reason, to-tag, ctype, body, headers; flags: RELIABLE */
    EV_ANSWER = 3,        /* UAC: 2xx to the initial INVITE: reason, to-tag, ctype, body, headers */
    EV_FAILED = 4,        /* UAC: final >= 300 to the initial INVITE (or local timeout/transport error): reason, -, -, -, headers; flags: LOCAL */
    EV_REQUEST = 5,       /* in-dialog request Python must answer (respond(req)): method, -, ctype, body, headers */
    EV_RESPONSE = 6,      /* final response to a request Python sent (send(leg)): reason, method, ctype, body, headers; flags: LOCAL, NEEDS_ACK */
    EV_ACK = 7,           /* UAS: ACK for our 2xx: -, -, ctype, body; flags: INITIAL */
    EV_ACK_TIMEOUT = 8,   /* UAS: no ACK for our 2xx within 64*T1; flags: INITIAL */
    EV_BYE = 9,           /* the peer sent BYE (answered 200); the leg has ended: -, -, -, -, headers */
    EV_CANCELLED = 10,    /* UAS: CANCEL before our final answer (200 + 487 sent); the leg has ended */
    EV_ENDED = 11,        /* the leg ended for another reason (transport error, 2xx after CANCEL...): reason */
    EV_REFUSED = 12,      /* a request answered here or dropped: reason code, src host, transport, method, detail, call-id; code = status (0 dropped) */
    EV_REQUEST_GONE = 13, /* a request Python was to answer is gone (CANCEL, leg ended) */
    EV_REGISTRATION = 14, /* a registration's outcome: req = its id; code = status (0: failed to send); f0 reason; flags = expires (s) */
    EV_RESOLVED = 15,     /* a host name resolved (RFC 3263): req = its id; code = count (0: failed); f0 "transport ip:port" lines; f1 error */
};

enum {
    F_RELIABLE = 1, F_LOCAL = 2, F_NEEDS_ACK = 4, F_INITIAL = 8, F_AFTER_CANCEL = 16,
};

#define NFIELDS 6

typedef struct event {
    struct event *next;
    int kind;
    unsigned long long leg, req;
    int code, flags;
    unsigned bytes_mask;          /* fields delivered as bytes rather than str */
    pj_str_t f[NFIELDS];
    char blob[];
} event_t;

static event_t *ev_head, *ev_tail;
static unsigned ev_count;

/* One trunk's digest credentials, for any realm (a trunk's own 401/407), as
 * both the dialog's auth session and a registration take them. The strings
 * are borrowed: pjsip copies them into its own pool. */
static void digest_credentials(pjsip_cred_info *cred, const char *user, Py_ssize_t ul, const char *pw,
                               Py_ssize_t pl)
{
    pj_bzero(cred, sizeof(*cred));
    cred->realm = pj_str("*");
    cred->scheme = pj_str("digest");
    cred->username.ptr = (char *)user; cred->username.slen = ul;
    cred->data_type = PJSIP_CRED_DATA_PLAIN_PASSWD;
    cred->data.ptr = (char *)(pw ? pw : ""); cred->data.slen = pl;
}

/* ------------------------------------------------------------------------ */
/* Legs and the requests Python must answer.                                 */

enum { ROLE_UAS = 1, ROLE_UAC = 2 };

typedef struct sreq sreq_t;

typedef struct leg {
    struct leg *next_dead;        /* graveyard link */
    unsigned long long id;
    int role;
    int ended;                    /* no more events; actions refused */
    pjsip_dialog *dlg;
    pj_hash_entry_buf hentry;

    /* initial INVITE */
    pjsip_transaction *inv_tsx;   /* UAS: until final sent; UAC: current INVITE tsx until final */
    pjsip_tx_data *tmpl;          /* UAS: response template for the initial INVITE */
    int final_code;

    /* UAS: an INVITE tsx whose 2xx awaits an ACK */
    pjsip_transaction *ack_tsx;
    int ack_initial;

    /* UAC */
    int got_provisional;
    int cancel_pending;           /* CANCEL waits for a provisional (RFC 3261 9.1) */
    int cancelling;
    pj_uint32_t ack_cseq;         /* 2xx received for this INVITE CSeq, ACK owed */
    pjsip_tx_data *last_ack;      /* sent ACK, for 2xx retransmissions */
    pj_uint32_t last_ack_cseq;
    struct { char tag[64]; pj_uint32_t rseq; } pracked[4];
    unsigned pracked_next;

    /* overlap control for INVITE transactions inside the dialog */
    int uac_invite_pending, uas_invite_pending;
    int auth_tries;
    sreq_t *sreqs;                /* requests Python is to answer on this leg */
} leg_t;

struct sreq {                      /* a server transaction Python is to answer */
    sreq_t *next, *prev;          /* on leg->sreqs */
    unsigned long long id;
    leg_t *leg;
    pjsip_transaction *tsx;
    pjsip_tx_data *tmpl;
    int is_invite;
    pj_hash_entry_buf hentry;
};

#define CREQ_MAGIC 0x67776371      /* "gwcq" */
typedef struct creq {              /* marker on client transactions we created */
    int magic;
    int initial;                  /* the leg's initial INVITE */
    int done;
    unsigned long long id;        /* Python's request id (0 for internal requests) */
} creq_t;

static pjsip_endpoint *endpt;
static pj_pool_t *core_pool;
static pj_hash_table_t *legs_by_id, *sreqs_by_id;
static unsigned long long next_id = 1;
static unsigned live_legs, live_sreqs;
static leg_t *graveyard;          /* legs detached during this poll, freed after it */
static PyObject *handler;

/* configuration */
typedef struct { int family; unsigned char addr[16]; int prefix; } cidr_t;
static cidr_t *trusted;
static unsigned trusted_n;
static int untrusted_reject;      /* 0: drop, 1: stateless 403 to INVITE */
static int require_tls;
static pj_str_t server_hdr, ua_hdr, contact_user, allow_value, supported_value;
static unsigned long long stat_refused, stat_malformed;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static const pj_str_t STR_RSEQ = {"RSeq", 4};
static const pj_str_t STR_RACK = {"RAck", 4};
static const pj_str_t STR_100REL = {"100rel", 6};
static const pj_str_t STR_SERVER = {"Server", 6};
static const pj_str_t STR_UA = {"User-Agent", 10};
static const pj_str_t STR_ALLOW = {"Allow", 5};
static const pj_str_t STR_SUPPORTED = {"Supported", 9};
static const pj_str_t STR_UNSUPPORTED = {"Unsupported", 11};
static const pj_str_t STR_ACCEPT = {"Accept", 6};
static const pj_str_t STR_WARNING = {"Warning", 7};
static const pj_str_t STR_RETRY_AFTER = {"Retry-After", 11};
static const pj_str_t STR_APP_SDP = {"application/sdp", 15};

static pjsip_module mod_gw, mod_filter;

static void str_from(pj_pool_t *pool, pj_str_t *dst, const char *s, Py_ssize_t n)
{
    dst->ptr = (char *)pj_pool_alloc(pool, n ? n : 1);
    if (n) memcpy(dst->ptr, s, n);
    dst->slen = n;
}

static leg_t *leg_lookup(unsigned long long id)
{
    leg_t *leg = (leg_t *)pj_hash_get(legs_by_id, &id, sizeof(id), NULL);
    return (leg && !leg->ended) ? leg : NULL;
}

static leg_t *leg_of_dlg(pjsip_dialog *dlg)
{
    if (!dlg || mod_gw.id < 0) return NULL;
    return (leg_t *)dlg->mod_data[mod_gw.id];
}

static void add_hdr(pjsip_tx_data *tdata, const pj_str_t *name, const pj_str_t *value)
{
    pjsip_generic_string_hdr *h = pjsip_generic_string_hdr_create(tdata->pool, name, value);
    if (h) pjsip_msg_add_hdr(tdata->msg, (pjsip_hdr *)h);
}

static void add_identity(pjsip_tx_data *tdata)
{
    if (tdata->msg->type == PJSIP_RESPONSE_MSG) {
        if (server_hdr.slen && !pjsip_msg_find_hdr_by_name(tdata->msg, &STR_SERVER, NULL))
            add_hdr(tdata, &STR_SERVER, &server_hdr);
    } else if (ua_hdr.slen && !pjsip_msg_find_hdr_by_name(tdata->msg, &STR_UA, NULL)) {
        add_hdr(tdata, &STR_UA, &ua_hdr);
    }
}

/* A response to send on a server transaction, from the template made when
 * the request arrived (pjsip needs the request's rx_data to build one, and
 * that is gone once the callback returns). Only the status line is set here:
 * pjsip_dlg_send_response() adds the To tag, and the Contact/Allow/Supported
 * headers a 1xx/2xx needs when the caller has not put its own. One reference,
 * which pjsip_dlg_send_response() takes over. */
static pjsip_tx_data *build_response(pjsip_tx_data *tmpl, int code, const pj_str_t *reason)
{
    pjsip_tx_data *t;
    if (pjsip_tx_data_clone(tmpl, 0, &t) != PJ_SUCCESS) return NULL;
    t->msg->line.status.code = code;
    if (reason && reason->slen > 0) pj_strdup(t->pool, &t->msg->line.status.reason, reason);
    else t->msg->line.status.reason = *pjsip_get_status_text(code);
    add_identity(t);
    return t;
}

/* ------------------------------------------------------------------------ */
/* The event queue                                                          */

static event_t *ev_new(int kind, unsigned long long leg, unsigned long long req, int code, int flags,
                       const pj_str_t *fields, unsigned nf, unsigned bytes_mask)
{
    size_t total = 0;
    unsigned i;
    event_t *ev;
    char *p;

    for (i = 0; i < nf; ++i) total += (size_t)(fields[i].slen > 0 ? fields[i].slen : 0);
    ev = (event_t *)malloc(sizeof(event_t) + total + 1);
    if (!ev) return NULL;
    memset(ev, 0, sizeof(event_t));
    ev->kind = kind; ev->leg = leg; ev->req = req; ev->code = code; ev->flags = flags;
    ev->bytes_mask = bytes_mask;
    p = ev->blob;
    for (i = 0; i < nf && i < NFIELDS; ++i) {
        if (fields[i].slen > 0 && fields[i].ptr) {
            memcpy(p, fields[i].ptr, fields[i].slen);
            ev->f[i].ptr = p;
            ev->f[i].slen = fields[i].slen;
            p += fields[i].slen;
        } else {
            ev->f[i].ptr = NULL;
            ev->f[i].slen = fields[i].ptr ? 0 : -1;  /* -1: None */
        }
    }
    for (; i < NFIELDS; ++i) { ev->f[i].ptr = NULL; ev->f[i].slen = -1; }
    if (ev_tail) ev_tail->next = ev; else ev_head = ev;
    ev_tail = ev;
    ++ev_count;
    return ev;
}

/* Print every header Python may want to relay or read, one per line. The
 * routing and dialog headers pjsip owns (Via, From, To, Call-ID, CSeq,
 * Route, Record-Route, Max-Forwards, Content-Length/-Type) are left out. */
static pj_str_t headers_block(pj_pool_t *pool, const pjsip_msg *msg)
{
    char buf[8192];
    pj_ssize_t len = 0;
    const pjsip_hdr *h;
    pj_str_t out = {NULL, 0};

    for (h = msg->hdr.next; h != &msg->hdr; h = h->next) {
        int n;
        switch (h->type) {
        case PJSIP_H_VIA: case PJSIP_H_FROM: case PJSIP_H_TO: case PJSIP_H_CALL_ID:
        case PJSIP_H_CSEQ: case PJSIP_H_ROUTE: case PJSIP_H_RECORD_ROUTE:
        case PJSIP_H_MAX_FORWARDS: case PJSIP_H_CONTENT_LENGTH: case PJSIP_H_CONTENT_TYPE:
            continue;
        default:
            break;
        }
        if (len + 3 >= (pj_ssize_t)sizeof(buf)) break;
        n = pjsip_hdr_print_on((void *)h, buf + len, sizeof(buf) - len - 2);
        if (n <= 0) continue;            /* does not fit: left out rather than cut */
        len += n;
        buf[len++] = '\r';
        buf[len++] = '\n';
    }
    if (len) str_from(pool, &out, buf, len);
    else out.ptr = "";
    return out;
}

/* Where the body of a raw message starts: after the first empty line (CRLF
 * CRLF or LF LF, whichever comes first, as gateway/edge.py body_bytes reads
 * the bridge's INVITE), leading line ends skipped; NULL without one. */
static char *raw_body_start(char *buf, pj_ssize_t len)
{
    char *p = buf, *end = buf + len;
    while (p < end && (*p == '\r' || *p == '\n')) ++p;
    for (; p < end; ++p) {
        if (p + 3 < end && p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') return p + 4;
        if (p + 1 < end && p[0] == '\n' && p[1] == '\n') return p + 2;
    }
    return NULL;
}

/* The body of a received message, as the bytes that came, and its type.
 * Bodies cross the gateway opaquely, so they are taken from the packet:
 * - pjsip parses a multipart body into its parts (the body's length is then
 *   0) and drops one it cannot split: both were relayed as no body at all;
 * - over UDP pjsip's body is the rest of the datagram whatever the
 *   Content-Length says; what lies beyond it is discarded (RFC 3261 18.3),
 *   as for the bridge's INVITE (gateway/edge.py body_bytes).
 * Found by fuzzing the trunk's answers and the bridge's in-dialog requests:
 * a trunk's multipart 200 reached the bridge without its SDP, and a
 * Content-Length shorter than the datagram was relayed with what followed. */
static void body_fields(pjsip_rx_data *rdata, pj_str_t *ctype, pj_str_t *body)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    const pjsip_media_type *mt = NULL;
    char *buf = rdata->msg_info.msg_buf, *start = NULL, *end;
    pj_ssize_t len;
    char tbuf[512];
    int n;

    ctype->ptr = NULL; ctype->slen = -1;
    body->ptr = NULL; body->slen = -1;
    if (msg->body) mt = &msg->body->content_type;
    else if (rdata->msg_info.ctype) mt = &rdata->msg_info.ctype->media;
    if (!mt || !buf || rdata->msg_info.len <= 0) return;   /* without Content-Type pjsip reads no body */
    end = buf + rdata->msg_info.len;
    if (msg->body && msg->body->len > 0 && (char *)msg->body->data >= buf && (char *)msg->body->data <= end)
        start = (char *)msg->body->data;
    else
        start = raw_body_start(buf, rdata->msg_info.len);
    if (!start || start >= end) return;
    len = end - start;
    if (rdata->msg_info.clen && rdata->msg_info.clen->len >= 0 && rdata->msg_info.clen->len < len)
        len = rdata->msg_info.clen->len;
    if (len <= 0) return;
    n = pjsip_media_type_print(tbuf, sizeof(tbuf), mt);
    if (n > 0) str_from(rdata->tp_info.pool, ctype, tbuf, n);
    body->ptr = start;
    body->slen = len;
}

/* ------------------------------------------------------------------------ */
/* Legs                                                                      */

static leg_t *leg_create(pjsip_dialog *dlg, int role)
{
    leg_t *leg = (leg_t *)calloc(1, sizeof(leg_t));
    if (!leg) return NULL;
    leg->id = next_id++;
    leg->role = role;
    leg->dlg = dlg;
    pj_hash_set_np(legs_by_id, &leg->id, sizeof(leg->id), 0, leg->hentry, leg);
    pjsip_dlg_add_usage(dlg, &mod_gw, leg);
    pjsip_dlg_inc_session(dlg, &mod_gw);
    ++live_legs;
    return leg;
}

static void sreq_release(sreq_t *r);
static int check_ready(void);
static pjsip_tx_data *build_response(pjsip_tx_data *tmpl, int code, const pj_str_t *reason);

/* The leg is over: Python hears nothing more of it. The dialog lives on in
 * pjsip until its transactions finish; it no longer points at the leg. The
 * leg's memory is freed after the current poll, so callers up the stack may
 * still read it. */
static void leg_detach(leg_t *leg)
{
    pjsip_dialog *dlg = leg->dlg;
    if (!dlg) return;
    leg->ended = 1;
    leg->dlg = NULL;
    if (leg->tmpl) { pjsip_tx_data_dec_ref(leg->tmpl); leg->tmpl = NULL; }
    if (leg->last_ack) { pjsip_tx_data_dec_ref(leg->last_ack); leg->last_ack = NULL; }
    /* Requests Python was to answer on this leg: answer them now (487 to a
     * re-INVITE, 481 to anything else), and tell Python they are gone. */
    while (leg->sreqs) {
        sreq_t *r = leg->sreqs;
        pj_str_t none = {NULL, -1};
        if (r->tsx->state < PJSIP_TSX_STATE_COMPLETED && r->tmpl) {
            pjsip_tx_data *t = build_response(r->tmpl, r->is_invite ? 487 : 481, NULL);
            if (t) { add_identity(t); pjsip_dlg_send_response(dlg, r->tsx, t); }
        }
        ev_new(EV_REQUEST_GONE, leg->id, r->id, 0, 0, &none, 0, 0);
        sreq_release(r);
    }
    pj_hash_set_np(legs_by_id, &leg->id, sizeof(leg->id), 0, leg->hentry, NULL);
    pjsip_dlg_set_mod_data(dlg, mod_gw.id, NULL);
    --live_legs;
    leg->next_dead = graveyard;
    graveyard = leg;
    pjsip_dlg_dec_session(dlg, &mod_gw);   /* may destroy the dialog */
}

static void graveyard_empty(void)
{
    while (graveyard) {
        leg_t *leg = graveyard;
        graveyard = leg->next_dead;
        free(leg);
    }
}

static void sreq_release(sreq_t *r)
{
    if (r->leg) {                                  /* unlink from leg->sreqs */
        if (r->prev) r->prev->next = r->next; else r->leg->sreqs = r->next;
        if (r->next) r->next->prev = r->prev;
    }
    pj_hash_set_np(sreqs_by_id, &r->id, sizeof(r->id), 0, r->hentry, NULL);
    if (r->tsx->mod_data[mod_gw.id] == r) r->tsx->mod_data[mod_gw.id] = NULL;
    if (r->tmpl) pjsip_tx_data_dec_ref(r->tmpl);
    pj_grp_lock_dec_ref(r->tsx->grp_lock);
    --live_sreqs;
    free(r);
}

/* ------------------------------------------------------------------------ */
/* Building outgoing messages from Python's arguments                        */

/* "Name: value\r\n..." -> generic headers. Lines that are not "token: value"
 * are refused, so Python cannot inject a header block by mistake. */
static int add_headers_block(pjsip_tx_data *tdata, const char *block, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t end = i, colon = -1, ns, ne, vs, ve;
        pj_str_t name, value;
        while (end < n && block[end] != '\r' && block[end] != '\n') {
            if (block[end] == ':' && colon < 0) colon = end;
            ++end;
        }
        if (end > i) {
            if (colon <= i) return -1;
            ns = i; ne = colon;
            while (ne > ns && (block[ne - 1] == ' ' || block[ne - 1] == '\t')) --ne;
            vs = colon + 1; ve = end;
            while (vs < ve && (block[vs] == ' ' || block[vs] == '\t')) ++vs;
            while (ve > vs && (block[ve - 1] == ' ' || block[ve - 1] == '\t')) --ve;
            if (ne == ns) return -1;
            str_from(tdata->pool, &name, block + ns, ne - ns);
            str_from(tdata->pool, &value, block + vs, ve - vs);
            add_hdr(tdata, &name, &value);
        }
        while (end < n && (block[end] == '\r' || block[end] == '\n')) ++end;
        i = end;
    }
    return 0;
}

/* "type/subtype;param=v" -> pjsip body (bytes copied). */
static int set_body(pjsip_tx_data *tdata, const char *ctype, Py_ssize_t ctlen, const char *body, Py_ssize_t blen)
{
    pj_str_t type, subtype, text;
    pjsip_msg_body *mb;
    Py_ssize_t slash = -1, semi = ctlen, i;
    if (!ctype || ctlen <= 0) { ctype = "application/sdp"; ctlen = 15; semi = ctlen; }
    for (i = 0; i < ctlen; ++i) {
        if (ctype[i] == '/' && slash < 0) slash = i;
        if (ctype[i] == ';') { semi = i; break; }
    }
    if (slash <= 0 || slash + 1 >= semi) return -1;
    str_from(tdata->pool, &type, ctype, slash);
    str_from(tdata->pool, &subtype, ctype + slash + 1, semi - slash - 1);
    text.ptr = (char *)body; text.slen = blen;
    mb = pjsip_msg_body_create(tdata->pool, &type, &subtype, &text);
    if (!mb) return -1;
    /* parameters ("boundary=..." of a multipart body) */
    i = semi;
    while (i < ctlen) {
        Py_ssize_t ps = i + 1, pe = ps, eq = -1;
        pjsip_param *p;
        while (pe < ctlen && ctype[pe] != ';') { if (ctype[pe] == '=' && eq < 0) eq = pe; ++pe; }
        while (ps < pe && ctype[ps] == ' ') ++ps;
        if (pe > ps) {
            p = PJ_POOL_ZALLOC_T(tdata->pool, pjsip_param);
            if (eq > ps) {
                str_from(tdata->pool, &p->name, ctype + ps, eq - ps);
                str_from(tdata->pool, &p->value, ctype + eq + 1, pe - eq - 1);
            } else {
                str_from(tdata->pool, &p->name, ctype + ps, pe - ps);
            }
            pj_list_push_back(&mb->content_type.param, p);
        }
        i = pe;
    }
    tdata->msg->body = mb;
    return 0;
}

typedef struct {
    const char *headers; Py_ssize_t hlen;
    const char *ctype; Py_ssize_t clen;
    const char *body; Py_ssize_t blen;
} extras_t;

static int apply_extras(pjsip_tx_data *tdata, const extras_t *x)
{
    if (x->headers && x->hlen && add_headers_block(tdata, x->headers, x->hlen) != 0) {
        PyErr_SetString(PyExc_ValueError, "headers must be lines of 'Name: value'");
        return -1;
    }
    if (x->body) {
        if (set_body(tdata, x->ctype, x->clen, x->body, x->blen) != 0) {
            PyErr_SetString(PyExc_ValueError, "content type must be 'type/subtype[;param=value]'");
            return -1;
        }
    }
    add_identity(tdata);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* UAC helpers                                                               */

static void send_ack(leg_t *leg, pjsip_dialog *dlg, pj_uint32_t cseq, const extras_t *x)
{
    pjsip_tx_data *ack;
    if (pjsip_dlg_create_request(dlg, &pjsip_ack_method, (int)cseq, &ack) != PJ_SUCCESS) return;
    if (x && x->body) set_body(ack, x->ctype, x->clen, x->body, x->blen);
    add_identity(ack);
    if (leg) {
        if (leg->last_ack) pjsip_tx_data_dec_ref(leg->last_ack);
        pjsip_tx_data_add_ref(ack);
        leg->last_ack = ack;
        leg->last_ack_cseq = cseq;
        leg->ack_cseq = 0;
    }
    pjsip_dlg_send_request(dlg, ack, -1, NULL);
}

static void send_simple(pjsip_dialog *dlg, const pjsip_method *method, const pj_str_t *hname, const pj_str_t *hvalue)
{
    pjsip_tx_data *tdata;
    creq_t *c;
    if (pjsip_dlg_create_request(dlg, method, -1, &tdata) != PJ_SUCCESS) return;
    if (hname) add_hdr(tdata, hname, hvalue);
    add_identity(tdata);
    c = PJ_POOL_ZALLOC_T(tdata->pool, creq_t);
    c->magic = CREQ_MAGIC;
    pjsip_dlg_send_request(dlg, tdata, mod_gw.id, c);
}

static void send_cancel(leg_t *leg)
{
    pjsip_tx_data *cancel;
    if (!leg->inv_tsx || !leg->inv_tsx->last_tx) return;
    if (pjsip_endpt_create_cancel(endpt, leg->inv_tsx->last_tx, &cancel) != PJ_SUCCESS) return;
    add_identity(cancel);
    pjsip_dlg_send_request(leg->dlg, cancel, -1, NULL);
    /* If the trunk never answers the CANCEL with 487, end the INVITE anyway. */
    pjsip_tsx_set_timeout(leg->inv_tsx, 64 * pjsip_cfg()->tsx.t1);
}

static int is_reliable(const pjsip_msg *msg, pj_uint32_t *rseq)
{
    const pjsip_require_hdr *req = (const pjsip_require_hdr *)pjsip_msg_find_hdr(msg, PJSIP_H_REQUIRE, NULL);
    const pjsip_generic_string_hdr *rs;
    unsigned i;
    int found = 0;
    for (; req; req = (const pjsip_require_hdr *)pjsip_msg_find_hdr(msg, PJSIP_H_REQUIRE, req->next)) {
        for (i = 0; i < req->count; ++i)
            if (!pj_stricmp(&req->values[i], &STR_100REL)) found = 1;
    }
    if (!found) return 0;
    rs = (const pjsip_generic_string_hdr *)pjsip_msg_find_hdr_by_name(msg, &STR_RSEQ, NULL);
    if (!rs || rs->hvalue.slen <= 0 || rs->hvalue.slen > 10) return 0;
    {
        char tmp[16];
        unsigned long v;
        char *endp;
        memcpy(tmp, rs->hvalue.ptr, rs->hvalue.slen);
        tmp[rs->hvalue.slen] = 0;
        v = strtoul(tmp, &endp, 10);
        if (*endp || v == 0 || v > 0xFFFFFFFFul) return 0;
        *rseq = (pj_uint32_t)v;
    }
    return 1;
}

static void send_prack(leg_t *leg, pjsip_rx_data *rdata, pj_uint32_t rseq)
{
    const pj_str_t *tag = &rdata->msg_info.to->tag;
    unsigned i;
    char rack[64];
    pj_str_t value;
    static pjsip_method prack_method;
    static const pj_str_t prack_name = {"PRACK", 5};

    for (i = 0; i < 4; ++i) {
        if (leg->pracked[i].rseq == rseq && (pj_ssize_t)strlen(leg->pracked[i].tag) == tag->slen &&
            !memcmp(leg->pracked[i].tag, tag->ptr, tag->slen))
            return;  /* a retransmission: our PRACK transaction retransmits itself */
    }
    i = leg->pracked_next++ % 4;
    leg->pracked[i].rseq = rseq;
    if (tag->slen < (pj_ssize_t)sizeof(leg->pracked[i].tag)) {
        memcpy(leg->pracked[i].tag, tag->ptr, tag->slen);
        leg->pracked[i].tag[tag->slen] = 0;
    } else {
        leg->pracked[i].tag[0] = 0;
    }
    if (!prack_method.name.slen) pjsip_method_init_np(&prack_method, (pj_str_t *)&prack_name);
    value.ptr = rack;
    value.slen = snprintf(rack, sizeof(rack), "%u %u INVITE", rseq, rdata->msg_info.cseq->cseq);
    send_simple(leg->dlg, &prack_method, &STR_RACK, &value);
}

/* ------------------------------------------------------------------------ */
/* Stateless answers outside any dialog                                      */

static int source_trusted(const pj_sockaddr *src)
{
    unsigned i;
    const unsigned char *a;
    int fam = src->addr.sa_family;
    if (fam == pj_AF_INET()) a = (const unsigned char *)&src->ipv4.sin_addr;
    else if (fam == pj_AF_INET6()) a = (const unsigned char *)&src->ipv6.sin6_addr;
    else return 0;
    for (i = 0; i < trusted_n; ++i) {
        const cidr_t *c = &trusted[i];
        int bits = c->prefix, k = 0;
        if (c->family != (fam == pj_AF_INET() ? 4 : 6)) continue;
        while (bits >= 8) { if (a[k] != c->addr[k]) break; ++k; bits -= 8; }
        if (bits >= 8) continue;
        if (bits > 0) {
            unsigned char mask = (unsigned char)(0xFF << (8 - bits));
            if ((a[k] & mask) != (c->addr[k] & mask)) continue;
        }
        return 1;
    }
    return 0;
}

static const char *transport_name(const pjsip_transport *tp)
{
    int t = tp ? tp->key.type & ~PJSIP_TRANSPORT_IPV6 : 0;
    if (t == PJSIP_TRANSPORT_TLS) return "tls";
    if (t == PJSIP_TRANSPORT_TCP) return "tcp";
    return "udp";
}

static void refused(pjsip_rx_data *rdata, int status, const char *reason, const char *detail)
{
    pj_str_t f[6];
    const char *tp = transport_name(rdata->tp_info.transport);
    f[0] = pj_str((char *)reason);
    f[1] = pj_str(rdata->pkt_info.src_name);
    f[2] = pj_str((char *)tp);
    if (rdata->msg_info.msg && rdata->msg_info.msg->type == PJSIP_REQUEST_MSG)
        f[3] = rdata->msg_info.msg->line.req.method.name;
    else { f[3].ptr = NULL; f[3].slen = -1; }
    f[4] = pj_str((char *)(detail ? detail : ""));
    if (rdata->msg_info.cid) f[5] = rdata->msg_info.cid->id; else { f[5].ptr = NULL; f[5].slen = -1; }
    ++stat_refused;
    ev_new(EV_REFUSED, 0, 0, status, 0, f, 6, 0);
}

/* `identity`: whether the configured Server header goes too. Not in the 403
 * to an untrusted source: with gateway.server_header set, that 403 carried
 * it, and svmap listed the product as the device's user agent (found by
 * tests/integration/test_scanners.py). */
static void send_stateless(pjsip_rx_data *rdata, int code, const char *warning, const pj_str_t *hname,
                           const pj_str_t *hvalue, int identity)
{
    pjsip_tx_data *tdata;
    if (pjsip_endpt_create_response(endpt, rdata, code, NULL, &tdata) != PJ_SUCCESS) return;
    if (hname && hvalue) add_hdr(tdata, hname, hvalue);
    if (code == 405 || code == 200) add_hdr(tdata, &STR_ALLOW, &allow_value);
    if (code == 200) {
        add_hdr(tdata, &STR_ACCEPT, &STR_APP_SDP);
        if (supported_value.slen) add_hdr(tdata, &STR_SUPPORTED, &supported_value);
    }
    if (warning) {
        char w[300];
        pj_str_t wv;
        wv.ptr = w;
        wv.slen = snprintf(w, sizeof(w), "399 - \"%s\"", warning);
        add_hdr(tdata, &STR_WARNING, &wv);
    }
    if (identity) add_identity(tdata);
    {
        pjsip_response_addr res_addr;
        if (pjsip_get_response_addr(tdata->pool, rdata, &res_addr) == PJ_SUCCESS)
            pjsip_endpt_send_response(endpt, &res_addr, tdata, NULL, NULL);
        else
            pjsip_tx_data_dec_ref(tdata);
    }
}

static void respond_stateless(pjsip_rx_data *rdata, int code, const char *warning, const pj_str_t *hname,
                              const pj_str_t *hvalue)
{
    send_stateless(rdata, code, warning, hname, hvalue, 1);
}

/* Methods that exist only inside a dialog or transaction: 481 outside one. */
static int in_dialog_only(const pj_str_t *m)
{
    static const char *names[] = {"BYE", "CANCEL", "PRACK", "UPDATE", "INFO", "NOTIFY", NULL};
    int i;
    for (i = 0; names[i]; ++i) if (!pj_strcmp2(m, names[i])) return 1;
    return 0;
}

/* Standard methods the gateway does not implement: 405 with Allow. */
static int known_method(const pj_str_t *m)
{
    static const char *names[] = {"REGISTER", "PUBLISH", "SUBSCRIBE", "REFER", "MESSAGE", NULL};
    int i;
    for (i = 0; names[i]; ++i) if (!pj_strcmp2(m, names[i])) return 1;
    return 0;
}

/* Out-of-dialog requests other than INVITE, from a trusted source: answered
 * here, statelessly (no transaction, no timers; RFC 4475 3.2.1). */
static void answer_out_of_dialog(pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    const pj_str_t *m = &msg->line.req.method.name;
    const pjsip_hdr *h;
    int cl = 0;
    char unsup[256];
    pj_ssize_t un = 0;

    if (msg->line.req.method.id == PJSIP_ACK_METHOD) return;
    if (pj_strcmp(&rdata->msg_info.cseq->method.name, m)) {
        respond_stateless(rdata, 400, "CSeq method does not match the request method", NULL, NULL);
        refused(rdata, 400, "malformed", "CSeq method does not match the request method");
        return;
    }
    for (h = msg->hdr.next; h != &msg->hdr; h = h->next) if (h->type == PJSIP_H_CONTENT_LENGTH) ++cl;
    if (cl > 1) {
        respond_stateless(rdata, 400, "more than one Content-Length", NULL, NULL);
        refused(rdata, 400, "malformed", "more than one Content-Length");
        return;
    }
    for (h = msg->hdr.next; h != &msg->hdr; h = h->next) {
        if (h->type == PJSIP_H_REQUIRE) {
            const pjsip_require_hdr *r = (const pjsip_require_hdr *)h;
            unsigned i;
            for (i = 0; i < r->count; ++i) {
                if (un + r->values[i].slen + 2 >= (pj_ssize_t)sizeof(unsup)) break;
                if (un) { unsup[un++] = ','; unsup[un++] = ' '; }
                memcpy(unsup + un, r->values[i].ptr, r->values[i].slen);
                un += r->values[i].slen;
            }
        }
    }
    if (un) {
        pj_str_t v = {unsup, un};
        respond_stateless(rdata, 420, NULL, &STR_UNSUPPORTED, &v);
        refused(rdata, 420, "bad_extension", "Require names an extension the gateway does not support");
        return;
    }
    if (msg->line.req.method.id == PJSIP_OPTIONS_METHOD) {
        respond_stateless(rdata, 200, NULL, NULL, NULL);
    } else if (in_dialog_only(m)) {
        respond_stateless(rdata, 481, NULL, NULL, NULL);
        refused(rdata, 481, "no_such_dialog", "a request that exists only inside a dialog");
    } else if (known_method(m)) {
        respond_stateless(rdata, 405, NULL, NULL, NULL);
        refused(rdata, 405, "method_not_allowed", "the gateway does not implement this method");
    } else {
        respond_stateless(rdata, 501, NULL, NULL, NULL);
        refused(rdata, 501, "not_implemented", "unknown method");
    }
}

/* ------------------------------------------------------------------------ */
/* The filter module: before the transaction layer, drops or refuses every  */
/* request from outside the trusted sources that is not inside a dialog.     */

/* A request from outside the trusted sources passes only when it belongs to
 * one of our dialogs (the trunk's BYE, re-INVITE...) or cancels one of our
 * INVITE transactions. Any To tag and any CANCEL used to pass, so a stranger
 * got pjsip's stateless 481 even with untrusted = "drop" (an INVITE with a
 * made-up To tag, a CANCEL): found while checking that an untrusted INVITE
 * gets nothing back by default. */
static int ours_from_elsewhere(pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    if (rdata->msg_info.to->tag.slen)
        return pjsip_ua_find_dialog(&rdata->msg_info.cid->id, &rdata->msg_info.to->tag,
                                    &rdata->msg_info.from->tag, PJ_FALSE) != NULL;
    if (msg->line.req.method.id == PJSIP_CANCEL_METHOD) {
        pj_str_t key;
        if (pjsip_tsx_create_key(rdata->tp_info.pool, &key, PJSIP_ROLE_UAS, &pjsip_invite_method, rdata) != PJ_SUCCESS)
            return 0;
        return pjsip_tsx_layer_find_tsx2(&key, PJ_FALSE) != NULL;
    }
    return 0;
}

static pj_bool_t filter_on_rx_request(pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    int tls_ok;
    tls_ok = !require_tls || (rdata->tp_info.transport &&
                              (rdata->tp_info.transport->key.type & ~PJSIP_TRANSPORT_IPV6) == PJSIP_TRANSPORT_TLS);
    if (rdata->tp_info.transport && (rdata->tp_info.transport->flag & PJSIP_TRANSPORT_DATAGRAM) &&
        rdata->pkt_info.len >= PJSIP_MAX_PKT_LEN) {
        /* A datagram fills pjsip's receive buffer only when it was at least
         * that long, and then it was cut there: what pjsip parsed is the
         * start of a request. Found by fuzzing: an INVITE whose SDP lay past
         * the cut was relayed as a late offer. Refused as oversized (400). */
        if (source_trusted(&rdata->pkt_info.src_addr) && tls_ok && msg->line.req.method.id != PJSIP_ACK_METHOD) {
            char w[96];
            snprintf(w, sizeof(w), "the request is longer than the %d bytes read from a datagram",
                     (int)PJSIP_MAX_PKT_LEN - 1);
            respond_stateless(rdata, 400, w, NULL, NULL);
            refused(rdata, 400, "malformed", w);
        }
        return PJ_TRUE;
    }
    if (source_trusted(&rdata->pkt_info.src_addr) && tls_ok) return PJ_FALSE;
    if (ours_from_elsewhere(rdata)) return PJ_FALSE;                       /* the UA layer decides */
    if (msg->line.req.method.id == PJSIP_ACK_METHOD) return PJ_TRUE;
    if (untrusted_reject && msg->line.req.method.id == PJSIP_INVITE_METHOD) {
        /* The reason only: nothing about organisers, numbers or the gateway itself. */
        static const pj_str_t reason = {"Reason", 6}, reason_v = {"SIP;cause=403;text=\"untrusted_source\"", 37};
        send_stateless(rdata, 403, NULL, &reason, &reason_v, 0);
        refused(rdata, 403, "untrusted_source", tls_ok ? "source not trusted" : "not over TLS");
    } else {
        refused(rdata, 0, "untrusted_source", tls_ok ? "source not trusted" : "not over TLS");
    }
    return PJ_TRUE;
}

/* A response in a datagram that filled pjsip's receive buffer was cut there,
 * as a request is (filter_on_rx_request): its body is only the start of the
 * peer's, and RFC 3261 18.3 discards a response whose packet ends before its
 * body does. Found by fuzzing the trunk's answers: a 17 KB 200 was relayed
 * cut, the bridge's 200 then no longer fitted pjsip's send buffer, and the
 * bridge got no final answer at all (the call ended by the ACK timeout).
 * Dropped: the trunk retransmits, or the INVITE times out (408). */
static pj_bool_t filter_on_rx_response(pjsip_rx_data *rdata)
{
    if (rdata->tp_info.transport && (rdata->tp_info.transport->flag & PJSIP_TRANSPORT_DATAGRAM) &&
        rdata->pkt_info.len >= PJSIP_MAX_PKT_LEN) {
        char w[96];
        snprintf(w, sizeof(w), "a response longer than the %d bytes read from a datagram was discarded",
                 (int)PJSIP_MAX_PKT_LEN - 1);
        refused(rdata, 0, "malformed", w);
        return PJ_TRUE;
    }
    return PJ_FALSE;
}

/* A packet pjsip could not parse. From a trusted source, a request gets a
 * stateless 400 built from its own Via/From/To/Call-ID/CSeq lines; anything
 * else is dropped (and counted). pjsip's drop callback carries no source
 * address, so the rx_data is found from the packet pointer: the packet
 * buffer is a member of pjsip_rx_data (layout from the headers). */
static pjsip_rx_data *rdata_of_packet(pjsip_transport *tp, void *data)
{
    size_t off = offsetof(pjsip_rx_data, pkt_info.packet);
    int k;
    for (k = 0; k < 256; ++k) {
        pjsip_rx_data *cand = (pjsip_rx_data *)((char *)data - k - off);
        if (cand->msg_info.msg_buf == (char *)data && cand->tp_info.transport == tp &&
            (char *)data >= cand->pkt_info.packet &&
            (char *)data < cand->pkt_info.packet + PJSIP_MAX_PKT_LEN)
            return cand;
    }
    return NULL;
}

static int header_line_is(const char *line, size_t n, const char *full, const char *compact)
{
    size_t fl = strlen(full), i = 0;
    if (n > fl && !strncasecmp(line, full, fl)) i = fl;
    else if (compact && n > 1 && tolower((unsigned char)line[0]) == compact[0]) i = 1;
    else return 0;
    while (i < n && (line[i] == ' ' || line[i] == '\t')) ++i;
    return i < n && line[i] == ':';
}

/* The status for a request pjsip's parser refused. pjsip refuses the whole
 * message for one header it cannot parse (RFC 4475 regaut01's unknown
 * Authorization scheme) or a Request-URI scheme it has no parser for
 * (unkscm, novelsc), which all got a 400 here. Now, in RFC 3261 8.2's
 * order, when the headers a response is built from (Via, From, To,
 * Call-ID, CSeq) parsed: a method the gateway implements for nobody gets
 * 405 with Allow (8.2.1), a Request-URI whose scheme is not sip, sips or
 * tel 416 (8.2.2.1); anything else, or an error in those headers (RFC 4475
 * scalar02's CSeq), stays 400. `errs` is pjsip's list of parse errors, with
 * the header name of each ("Request Line" for the first line). */
static int essential_header(const pj_str_t *h)
{
    static const char *names[] = {"Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", NULL};
    int i;
    if (h->slen <= 0) return 1;                   /* unknown where: assume the worst */
    for (i = 0; names[i]; ++i) if (!pj_stricmp2(h, names[i])) return 1;
    return 0;
}

static int dropped_status(const char *line, size_t n, const pjsip_parser_err_report *errs, const char **warning)
{
    size_t m = 0, u, k;
    int line_bad = 0;
    pj_str_t method;
    const pjsip_parser_err_report *e;
    static const char *schemes[] = {"sip", "sips", "tel", NULL};
    if (!errs) return 400;
    for (e = errs->next; e != errs; e = e->next) {
        if (!pj_strcmp2(&e->hname, "Request Line")) line_bad = 1;
        else if (essential_header(&e->hname)) return 400;
    }
    while (m < n && line[m] != ' ') ++m;
    method.ptr = (char *)line; method.slen = (pj_ssize_t)m;
    if (known_method(&method)) {
        *warning = "the gateway does not implement this method";
        return 405;
    }
    if (!line_bad) return 400;
    u = m;
    while (u < n && line[u] == ' ') ++u;
    for (k = u; k < n && line[k] != ':' && line[k] != ' '; ++k) {
        unsigned char c = (unsigned char)line[k];
        if (!(isalpha(c) || (k > u && (isdigit(c) || c == '+' || c == '-' || c == '.')))) return 400;
    }
    if (k == u || k >= n || line[k] != ':') return 400;
    for (m = 0; schemes[m]; ++m)
        if (strlen(schemes[m]) == k - u && !strncasecmp(line + u, schemes[m], k - u)) return 400;
    *warning = "the Request-URI scheme is not supported";
    return 416;
}

static void on_dropped(pjsip_tp_dropped_data *dd)
{
    pjsip_rx_data *rdata;
    const char *p = (const char *)dd->data, *end;
    const char *warning = "the request could not be parsed";
    char out[4096];
    size_t len = 0, n, i;
    int is_request, have_via = 0, have_cseq = 0, code;
    pj_sockaddr addr;
    int addr_len;

    /* Also PJSIP_EMISSINGHDR: parsed, but without Call-ID, From, To, Via or
     * CSeq, or (TCP) without a Content-Length; and PJSIP_EINVALIDHDR: (TCP)
     * a Content-Length that is not a number in range. Found by fuzzing:
     * these got silence, not the 400 of any malformed request. And
     * PJSIP_ERXOVERFLOW: (TCP) a message longer than the receive buffer,
     * which pjsip discards whole; over UDP the same request gets a 400
     * (filter_on_rx_request). Found by fuzzing the TCP framing. */
    if ((dd->status != PJSIP_EINVALIDMSG && dd->status != PJSIP_EMISSINGHDR && dd->status != PJSIP_EINVALIDHDR &&
         dd->status != PJSIP_ERXOVERFLOW) ||
        dd->len == 0 || dd->len > PJSIP_MAX_PKT_LEN)
        return;
    ++stat_malformed;
    if (dd->tp->flag & PJSIP_TRANSPORT_DATAGRAM) {
        rdata = rdata_of_packet(dd->tp, dd->data);
        if (!rdata) return;
        pj_sockaddr_cp(&addr, &rdata->pkt_info.src_addr);
        addr_len = rdata->pkt_info.src_addr_len;
    } else {
        pj_sockaddr_cp(&addr, &dd->tp->key.rem_addr);
        addr_len = dd->tp->addr_len;
    }
    if (!source_trusted(&addr)) return;
    end = p + dd->len;
    /* A request line "METHOD SP ... SIP/2.0" and not ACK. */
    n = 0;
    while (p + n < end && p[n] != '\r' && p[n] != '\n') ++n;
    is_request = n > 8 && !memcmp(p + n - 7, "SIP/2.0", 7) && memcmp(p, "SIP/", 4) && memcmp(p, "ACK ", 4);
    if (!is_request) return;
    if (dd->status == PJSIP_EMISSINGHDR) {
        code = 400;
        warning = (dd->tp->flag & PJSIP_TRANSPORT_DATAGRAM)
                      ? "a required header (Call-ID, From, To, Via or CSeq) is missing"
                      : "a required header (Call-ID, From, To, Via, CSeq or Content-Length) is missing";
    } else if (dd->status == PJSIP_EINVALIDHDR) {
        code = 400;
        warning = "the Content-Length is not valid";
    } else if (dd->status == PJSIP_ERXOVERFLOW) {
        static char too_long[96];
        code = 400;
        snprintf(too_long, sizeof(too_long), "the request is longer than the %d bytes the gateway reads",
                 (int)PJSIP_MAX_PKT_LEN);
        warning = too_long;
    } else {
        /* Parse it again (pjsip's rx_data is not at hand for every transport) for
         * the list of what failed to parse. */
        pj_pool_t *pool = pjsip_endpt_create_pool(endpt, "gwdrop", 1024, 1024);
        pjsip_parser_err_report errs;
        char *copy;
        pj_list_init(&errs);
        code = 400;
        if (pool && (copy = (char *)pj_pool_alloc(pool, dd->len + 1)) != NULL) {
            memcpy(copy, dd->data, dd->len);
            copy[dd->len] = 0;
            pjsip_parse_msg(pool, copy, dd->len, &errs);
            code = dropped_status(p, n, &errs, &warning);
        }
        if (pool) pjsip_endpt_release_pool(endpt, pool);
    }
    len = (size_t)snprintf(out, sizeof(out), "SIP/2.0 %d %s\r\n", code,
                           code == 405 ? "Method Not Allowed" : code == 416 ? "Unsupported URI Scheme"
                                                                            : "Bad Request");
    p += n;
    while (p < end) {
        const char *line;
        /* One line end, then the next line; an empty line ends the headers. */
        if (p < end && *p == '\r') ++p;
        if (p < end && *p == '\n') ++p;
        line = p;
        n = 0;
        while (line + n < end && line[n] != '\r' && line[n] != '\n') ++n;
        if (n == 0) break;
        p = line + n;
        if (header_line_is(line, n, "Via", "v") || header_line_is(line, n, "From", "f") ||
            header_line_is(line, n, "To", "t") || header_line_is(line, n, "Call-ID", "i") ||
            header_line_is(line, n, "CSeq", NULL)) {
            if (header_line_is(line, n, "Via", "v")) have_via = 1;
            if (header_line_is(line, n, "CSeq", NULL)) have_cseq = 1;
            for (i = 0; i < n; ++i) if ((unsigned char)line[i] < 0x20 && line[i] != '\t') break;
            if (i < n || len + n + 2 >= sizeof(out) - 200) continue;
            memcpy(out + len, line, n);
            len += n;
            out[len++] = '\r'; out[len++] = '\n';
        }
    }
    if (!have_via || !have_cseq) return;
    if (code == 405 && allow_value.slen < 512)
        len += (size_t)snprintf(out + len, sizeof(out) - len, "Allow: %.*s\r\n", (int)allow_value.slen,
                                allow_value.ptr);
    len += (size_t)snprintf(out + len, sizeof(out) - len, "Warning: 399 - \"%s\"\r\nContent-Length: 0\r\n\r\n",
                            warning);
    {
        pjsip_tpselector sel;
        pj_bzero(&sel, sizeof(sel));
        if (!(dd->tp->flag & PJSIP_TRANSPORT_DATAGRAM)) {
            sel.type = PJSIP_TPSELECTOR_TRANSPORT;
            sel.u.transport = dd->tp;
        }
        pjsip_endpt_send_raw(endpt, (pjsip_transport_type_e)dd->tp->key.type, &sel, out, len, &addr, addr_len,
                             NULL, NULL);
    }
    {
        pj_str_t f[6];
        char host[PJ_INET6_ADDRSTRLEN + 2];
        f[0] = pj_str(code == 405 ? "method_not_allowed" : code == 416 ? "unsupported_uri_scheme" : "malformed");
        pj_sockaddr_print(&addr, host, sizeof(host), 0);
        f[1] = pj_str(host);
        f[2] = pj_str((char *)transport_name(dd->tp));
        f[3].ptr = NULL; f[3].slen = -1;
        f[4] = pj_str((char *)warning);
        f[5].ptr = NULL; f[5].slen = -1;
        ev_new(EV_REFUSED, 0, 0, code, 0, f, 6, 0);
    }
}

static pjsip_module mod_filter = {
    NULL, NULL, {"mod-gw-filter", 13}, -1,
    PJSIP_MOD_PRIORITY_TRANSPORT_LAYER + 1,
    NULL, NULL, NULL, NULL,
    &filter_on_rx_request, &filter_on_rx_response, NULL, NULL, NULL,
};

/* ------------------------------------------------------------------------ */
/* The gateway module: new INVITEs, and the dialog usage of every leg.       */

static pj_str_t make_contact(pj_pool_t *pool, const pjsip_transport *tp)
{
    char buf[256];
    const char *t = transport_name(tp);
    int v6 = tp && (tp->key.type & PJSIP_TRANSPORT_IPV6);
    pj_str_t out;
    int n = snprintf(buf, sizeof(buf), "<sip:%.*s@%s%.*s%s:%d%s%s>",
                     (int)contact_user.slen, contact_user.ptr, v6 ? "[" : "",
                     (int)tp->local_name.host.slen, tp->local_name.host.ptr, v6 ? "]" : "",
                     tp->local_name.port, strcmp(t, "udp") ? ";transport=" : "", strcmp(t, "udp") ? t : "");
    str_from(pool, &out, buf, n);
    return out;
}

static void on_new_invite(pjsip_rx_data *rdata)
{
    pjsip_dialog *dlg;
    pj_str_t contact;
    leg_t *leg;
    pjsip_tx_data *trying;
    pj_str_t f[3];

    pj_status_t st;
    contact = make_contact(rdata->tp_info.pool, rdata->tp_info.transport);
    st = pjsip_dlg_create_uas_and_inc_lock(pjsip_ua_instance(), rdata, &contact, &dlg);
    if (st != PJ_SUCCESS) {
        /* A request the dialog layer refuses (no usable Contact...) is the
         * sender's mistake: its 4xx; anything else is ours: 500. The
         * transaction layer refuses a CSeq method other than INVITE with
         * PJSIP_EINVALIDHDR (PJSIP_EMISSINGHDR for a missing CSeq or Via),
         * which pjsip's own dialog code answers 400: found by fuzzing
         * ("CSeq: 1 BYE" on an INVITE got a 500 here). */
        int code = PJSIP_ERRNO_TO_SIP_STATUS(st);
        char err[PJ_ERR_MSG_SIZE];
        const char *warning;
        pj_str_t text = pj_strerror(st, err, sizeof(err) - 1);
        err[text.slen] = 0;
        if (st == PJSIP_EINVALIDHDR || st == PJSIP_EMISSINGHDR || st == PJSIP_ENOTREQUESTMSG) code = 400;
        if (code < 400 || code > 499) code = 500;
        if (st == PJSIP_EINVALIDHDR && rdata->msg_info.cseq &&
            pjsip_method_cmp(&rdata->msg_info.msg->line.req.method, &rdata->msg_info.cseq->method))
            warning = "CSeq method does not match the request method";
        else if (st == PJSIP_ERRNO_FROM_SIP_STATUS(400))
            warning = "the INVITE has no usable Contact";
        else
            warning = err;
        respond_stateless(rdata, code, warning, NULL, NULL);
        refused(rdata, code, code == 500 ? "internal_error" : "malformed", warning);
        return;
    }
    leg = leg_create(dlg, ROLE_UAS);
    if (!leg) {
        pjsip_dlg_dec_lock(dlg);
        return;
    }
    leg->inv_tsx = pjsip_rdata_get_tsx(rdata);
    if (pjsip_dlg_create_response(dlg, rdata, 100, NULL, &leg->tmpl) != PJ_SUCCESS) leg->tmpl = NULL;
    if (leg->tmpl && pjsip_tx_data_clone(leg->tmpl, 0, &trying) == PJ_SUCCESS) {
        add_identity(trying);
        pjsip_tx_data_add_ref(trying);
        pjsip_dlg_send_response(dlg, leg->inv_tsx, trying);
        pjsip_tx_data_dec_ref(trying);
    }
    f[0].ptr = rdata->msg_info.msg_buf;
    f[0].slen = rdata->msg_info.len;
    f[1] = pj_str(rdata->pkt_info.src_name);
    f[2] = pj_str((char *)transport_name(rdata->tp_info.transport));
    ev_new(EV_INVITE, leg->id, 0, rdata->pkt_info.src_port, 0, f, 3, 1u /* raw as bytes */);
    pjsip_dlg_dec_lock(dlg);
}

static void respond_in_dialog(pjsip_dialog *dlg, pjsip_rx_data *rdata, int code, const pj_str_t *hname,
                              const pj_str_t *hvalue)
{
    pjsip_tx_data *tdata;
    pjsip_transaction *tsx = pjsip_rdata_get_tsx(rdata);
    if (!tsx) return;
    if (pjsip_dlg_create_response(dlg, rdata, code, NULL, &tdata) != PJ_SUCCESS) return;
    if (hname) add_hdr(tdata, hname, hvalue);
    if (code == 405) add_hdr(tdata, &STR_ALLOW, &allow_value);
    add_identity(tdata);
    pjsip_dlg_send_response(dlg, tsx, tdata);
}

static void answer_initial(leg_t *leg, int code)
{
    pjsip_tx_data *t;
    if (!leg->inv_tsx || !leg->tmpl || leg->inv_tsx->state >= PJSIP_TSX_STATE_COMPLETED) return;
    t = build_response(leg->tmpl, code, NULL);
    if (!t) return;
    add_identity(t);
    leg->final_code = code;
    pjsip_dlg_send_response(leg->dlg, leg->inv_tsx, t);
}

static void on_in_dialog_request(pjsip_dialog *dlg, pjsip_rx_data *rdata)
{
    leg_t *leg = leg_of_dlg(dlg);
    const pjsip_msg *msg = rdata->msg_info.msg;
    pjsip_method_e mid = msg->line.req.method.id;
    pjsip_transaction *tsx = pjsip_rdata_get_tsx(rdata);

    if (mid == PJSIP_ACK_METHOD) {
        if (leg && leg->ack_tsx && rdata->msg_info.cseq->cseq == leg->ack_tsx->cseq) {
            pjsip_transaction *t = leg->ack_tsx;
            pj_str_t f[4];
            int initial = leg->ack_initial;
            leg->ack_tsx = NULL;
            pjsip_tsx_stop_retransmit(t);
            pjsip_tsx_terminate_async2(t, t->status_code, NULL, pjsip_cfg()->tsx.td);
            f[0].ptr = NULL; f[0].slen = -1; f[1] = f[0];
            body_fields(rdata, &f[2], &f[3]);
            ev_new(EV_ACK, leg->id, 0, 0, initial ? F_INITIAL : 0, f, 4, 8u);
        }
        return;
    }
    if (!leg) {                                   /* the leg has ended; the dialog lingers */
        respond_in_dialog(dlg, rdata, mid == PJSIP_BYE_METHOD ? 200 : 481, NULL, NULL);
        return;
    }
    if (mid == PJSIP_CANCEL_METHOD) {
        respond_in_dialog(dlg, rdata, 200, NULL, NULL);
        if (leg->role == ROLE_UAS && leg->inv_tsx && leg->final_code == 0) {
            pj_str_t none = {NULL, -1};
            answer_initial(leg, 487);
            ev_new(EV_CANCELLED, leg->id, 0, 487, 0, &none, 0, 0);
            leg_detach(leg);
        } else {
            /* CANCEL of a re-INVITE Python has not answered yet. */
            sreq_t *r;
            for (r = leg->sreqs; r; r = r->next) {
                if (r->leg == leg && r->is_invite && r->tsx->cseq == rdata->msg_info.cseq->cseq &&
                    r->tsx->state < PJSIP_TSX_STATE_COMPLETED) {
                    pjsip_tx_data *t = build_response(r->tmpl, 487, NULL);
                    pj_str_t none = {NULL, -1};
                    if (t) { add_identity(t); pjsip_dlg_send_response(dlg, r->tsx, t); }
                    leg->uas_invite_pending = 0;
                    ev_new(EV_REQUEST_GONE, leg->id, r->id, 487, 0, &none, 0, 0);
                    sreq_release(r);
                    break;
                }
            }
        }
        return;
    }
    if (mid == PJSIP_BYE_METHOD) {
        pj_str_t f[5];
        respond_in_dialog(dlg, rdata, 200, NULL, NULL);
        if (leg->role == ROLE_UAS && leg->inv_tsx && leg->final_code == 0) answer_initial(leg, 487);
        f[0].ptr = NULL; f[0].slen = -1; f[1] = f[0]; f[2] = f[0]; f[3] = f[0];
        f[4] = headers_block(rdata->tp_info.pool, msg);
        ev_new(EV_BYE, leg->id, 0, 0, 0, f, 5, 0);
        leg_detach(leg);
        return;
    }
    if (!pj_strcmp2(&msg->line.req.method.name, "PRACK")) {
        respond_in_dialog(dlg, rdata, 481, NULL, NULL);  /* we never send reliable provisionals */
        return;
    }
    if (!pj_strcmp2(&msg->line.req.method.name, "REFER")) {
        /* A transfer would place a call past admission, policy and the ledger. */
        static const pj_str_t refer_to = {"Refer-To", 8}, refer_to_c = {"r", 1};
        const pjsip_hdr *h = (const pjsip_hdr *)pjsip_msg_find_hdr_by_names(msg, &refer_to, &refer_to_c, NULL);
        char target[512];
        int n = h ? pjsip_hdr_print_on((void *)h, target, sizeof(target) - 1) : -1;
        pj_str_t f[5];
        respond_in_dialog(dlg, rdata, 403, NULL, NULL);
        f[0] = pj_str("transfer_refused");
        f[1] = pj_str(rdata->pkt_info.src_name);
        f[2] = pj_str((char *)transport_name(rdata->tp_info.transport));
        f[3] = msg->line.req.method.name;
        if (n > 0) {
            char *colon = memchr(target, ':', n);
            f[4].ptr = colon ? colon + 1 : target;
            f[4].slen = n - (f[4].ptr - target);
            while (f[4].slen > 0 && *f[4].ptr == ' ') { ++f[4].ptr; --f[4].slen; }
        } else {
            f[4] = pj_str("");
        }
        ev_new(EV_REFUSED, leg->id, 0, 403, 0, f, 5, 0);
        return;
    }
    if (!pj_strcmp2(&msg->line.req.method.name, "SUBSCRIBE")) {
        respond_in_dialog(dlg, rdata, 405, NULL, NULL);
        return;
    }
    if (mid == PJSIP_INVITE_METHOD) {
        if (leg->role == ROLE_UAS && leg->final_code == 0) {
            static const pj_str_t one = {"1", 1};
            respond_in_dialog(dlg, rdata, 500, &STR_RETRY_AFTER, &one);   /* RFC 3261 14.2 */
            return;
        }
        if (leg->uac_invite_pending) {           /* glare: both sides re-INVITE */
            respond_in_dialog(dlg, rdata, 491, NULL, NULL);
            return;
        }
        if (leg->uas_invite_pending || leg->ack_tsx) {
            static const pj_str_t one = {"1", 1};
            respond_in_dialog(dlg, rdata, 500, &STR_RETRY_AFTER, &one);
            return;
        }
    }
    if (!tsx) return;
    {
        sreq_t *r = (sreq_t *)calloc(1, sizeof(sreq_t));
        pj_str_t f[5];
        if (!r) { respond_in_dialog(dlg, rdata, 500, NULL, NULL); return; }
        if (pjsip_dlg_create_response(dlg, rdata, 500, NULL, &r->tmpl) != PJ_SUCCESS) {
            free(r);
            respond_in_dialog(dlg, rdata, 500, NULL, NULL);
            return;
        }
        r->id = next_id++;
        r->leg = leg;
        r->tsx = tsx;
        r->is_invite = mid == PJSIP_INVITE_METHOD;
        pj_grp_lock_add_ref(tsx->grp_lock);
        tsx->mod_data[mod_gw.id] = r;
        pj_hash_set_np(sreqs_by_id, &r->id, sizeof(r->id), 0, r->hentry, r);
        r->next = leg->sreqs;
        if (leg->sreqs) leg->sreqs->prev = r;
        leg->sreqs = r;
        ++live_sreqs;
        if (r->is_invite) leg->uas_invite_pending = 1;
        f[0] = msg->line.req.method.name;
        f[1].ptr = NULL; f[1].slen = -1;
        body_fields(rdata, &f[2], &f[3]);
        f[4] = headers_block(rdata->tp_info.pool, msg);
        ev_new(EV_REQUEST, leg->id, r->id, 0, 0, f, 5, 8u);
    }
}

static pj_bool_t gw_on_rx_request(pjsip_rx_data *rdata)
{
    pjsip_dialog *dlg = pjsip_rdata_get_dlg(rdata);
    if (dlg) {
        /* The dialog hands a request to its usages before feeding it to the
         * new transaction, so requests are handled when their transaction
         * reaches Trying (gw_on_tsx_state); only ACK, which has none, is
         * handled here. Claiming it keeps the dialog from answering 500. */
        if (rdata->msg_info.msg->line.req.method.id == PJSIP_ACK_METHOD || !pjsip_rdata_get_tsx(rdata))
            on_in_dialog_request(dlg, rdata);
        return PJ_TRUE;
    }
    if (rdata->msg_info.to->tag.slen) return PJ_FALSE;   /* the UA layer answered 481 already */
    if (rdata->msg_info.msg->line.req.method.id == PJSIP_INVITE_METHOD) {
        on_new_invite(rdata);
        return PJ_TRUE;
    }
    answer_out_of_dialog(rdata);
    return PJ_TRUE;
}

/* 2xx to an INVITE outside any transaction: a retransmission (our ACK was
 * lost), or a late 2xx on a leg that has ended. Either way it gets an ACK. */
static pj_bool_t gw_on_rx_response(pjsip_rx_data *rdata)
{
    pjsip_dialog *dlg = pjsip_rdata_get_dlg(rdata);
    leg_t *leg;
    pj_uint32_t cseq;
    if (!dlg || pjsip_rdata_get_tsx(rdata)) return PJ_FALSE;
    if (rdata->msg_info.cseq->method.id != PJSIP_INVITE_METHOD ||
        rdata->msg_info.msg->line.status.code / 100 != 2)
        return PJ_FALSE;
    cseq = rdata->msg_info.cseq->cseq;
    leg = leg_of_dlg(dlg);
    if (leg && leg->last_ack && leg->last_ack_cseq == cseq) {
        pjsip_tx_data_add_ref(leg->last_ack);
        pjsip_dlg_send_request(dlg, leg->last_ack, -1, NULL);
    } else if (!leg) {
        /* A 2xx on a leg that has ended (given up, cancelled): take it and end it. */
        send_ack(NULL, dlg, cseq, NULL);
        if (!dlg->mod_data[mod_gw.id] && dlg->state == PJSIP_DIALOG_STATE_ESTABLISHED)
            send_simple(dlg, &pjsip_bye_method, NULL, NULL);
    }
    /* else: Python owes the ACK (late offer); the retransmission waits for it. */
    return PJ_TRUE;
}

static void on_uac_invite_state(leg_t *leg, pjsip_transaction *tsx, pjsip_event *e, creq_t *c)
{
    pjsip_rx_data *rdata = NULL;
    pjsip_dialog *dlg = leg->dlg;
    int code;
    pj_str_t f[5];

    if (e->type == PJSIP_EVENT_TSX_STATE && e->body.tsx_state.type == PJSIP_EVENT_RX_MSG)
        rdata = e->body.tsx_state.src.rdata;

    if (tsx->state == PJSIP_TSX_STATE_CALLING) { leg->inv_tsx = tsx; return; }
    if (c->done) return;

    if (rdata) {
        const pjsip_msg *msg = rdata->msg_info.msg;
        code = msg->line.status.code;
        if (code < 200) {
            pj_uint32_t rseq = 0;
            int reliable;
            leg->got_provisional = 1;
            if (leg->cancel_pending) { leg->cancel_pending = 0; send_cancel(leg); }
            if (code == 100) return;
            reliable = is_reliable(msg, &rseq);
            if (reliable) send_prack(leg, rdata, rseq);
            if (leg->cancelling) return;
            f[0] = msg->line.status.reason;
            f[1] = rdata->msg_info.to->tag;
            body_fields(rdata, &f[2], &f[3]);
            f[4] = headers_block(rdata->tp_info.pool, msg);
            ev_new(EV_PROVISIONAL, leg->id, 0, code, reliable ? F_RELIABLE : 0, f, 5, 8u);
            return;
        }
        if ((code == 401 || code == 407) && dlg->auth_sess.cred_cnt > 0 && leg->auth_tries < 2 &&
            !leg->cancelling) {
            pjsip_tx_data *retry;
            if (pjsip_auth_clt_reinit_req(&dlg->auth_sess, rdata, tsx->last_tx, &retry) == PJ_SUCCESS) {
                creq_t *c2 = PJ_POOL_ZALLOC_T(retry->pool, creq_t);
                c2->magic = CREQ_MAGIC;
                c2->initial = 1;
                c->done = 1;
                ++leg->auth_tries;
                leg->inv_tsx = NULL;
                leg->got_provisional = 0;
                if (pjsip_dlg_send_request(dlg, retry, mod_gw.id, c2) == PJ_SUCCESS) return;
            }
        }
        c->done = 1;
        leg->final_code = code;
        leg->inv_tsx = NULL;
        if (code < 300) {
            leg->ack_cseq = rdata->msg_info.cseq->cseq;
            if (leg->cancelling) {
                /* The trunk answered as we cancelled: take the call and end it. */
                pj_str_t none = {NULL, -1};
                send_ack(leg, dlg, leg->ack_cseq, NULL);
                send_simple(dlg, &pjsip_bye_method, NULL, NULL);
                ev_new(EV_ENDED, leg->id, 0, code, F_AFTER_CANCEL, &none, 0, 0);
                leg_detach(leg);
                return;
            }
            f[0] = msg->line.status.reason;
            f[1] = rdata->msg_info.to->tag;
            body_fields(rdata, &f[2], &f[3]);
            f[4] = headers_block(rdata->tp_info.pool, msg);
            ev_new(EV_ANSWER, leg->id, 0, code, 0, f, 5, 8u);
            return;
        }
        f[0] = msg->line.status.reason;
        f[1].ptr = NULL; f[1].slen = -1; f[2] = f[1]; f[3] = f[1];
        f[4] = headers_block(rdata->tp_info.pool, msg);
        ev_new(EV_FAILED, leg->id, 0, code, 0, f, 5, 0);
        leg_detach(leg);
        return;
    }
    if (tsx->state == PJSIP_TSX_STATE_TERMINATED || tsx->state == PJSIP_TSX_STATE_COMPLETED) {
        /* Timer B, the CANCEL timeout or a transport error: no final response came. */
        char reason[96];
        code = tsx->status_code >= 300 ? tsx->status_code : 408;
        c->done = 1;
        leg->final_code = code;
        leg->inv_tsx = NULL;
        f[0].ptr = reason;
        f[0].slen = snprintf(reason, sizeof(reason), "%.*s", (int)tsx->status_text.slen, tsx->status_text.ptr);
        f[1].ptr = NULL; f[1].slen = -1; f[2] = f[1]; f[3] = f[1];
        f[4] = pj_str("");
        ev_new(EV_FAILED, leg->id, 0, code, F_LOCAL, f, 5, 0);
        leg_detach(leg);
    }
}

static void on_uac_request_state(leg_t *leg, pjsip_transaction *tsx, pjsip_event *e, creq_t *c)
{
    pjsip_rx_data *rdata = NULL;
    pj_str_t f[5];
    int code, flags = 0;

    if (c->done || !c->id) return;
    if (e->type == PJSIP_EVENT_TSX_STATE && e->body.tsx_state.type == PJSIP_EVENT_RX_MSG)
        rdata = e->body.tsx_state.src.rdata;
    if (rdata) {
        const pjsip_msg *msg = rdata->msg_info.msg;
        code = msg->line.status.code;
        if (code < 200) return;
        if ((code == 401 || code == 407) && leg && leg->dlg && leg->dlg->auth_sess.cred_cnt > 0 && leg->auth_tries < 4) {
            pjsip_tx_data *retry;
            if (pjsip_auth_clt_reinit_req(&leg->dlg->auth_sess, rdata, tsx->last_tx, &retry) == PJ_SUCCESS) {
                creq_t *c2 = PJ_POOL_ZALLOC_T(retry->pool, creq_t);
                *c2 = *c;
                c->done = 1;
                ++leg->auth_tries;
                if (pjsip_dlg_send_request(leg->dlg, retry, mod_gw.id, c2) == PJ_SUCCESS) return;
            }
        }
        c->done = 1;
        if (tsx->method.id == PJSIP_INVITE_METHOD) {
            if (leg) leg->uac_invite_pending = 0;
            if (code < 300) {
                if (leg) leg->ack_cseq = rdata->msg_info.cseq->cseq;
                flags |= F_NEEDS_ACK;
            }
        }
        if (!leg) {
            if (flags & F_NEEDS_ACK) {
                pjsip_dialog *dlg = pjsip_tsx_get_dlg(tsx);
                if (dlg) send_ack(NULL, dlg, rdata->msg_info.cseq->cseq, NULL);
            }
            return;
        }
        f[0] = msg->line.status.reason;
        f[1] = tsx->method.name;
        body_fields(rdata, &f[2], &f[3]);
        f[4] = headers_block(rdata->tp_info.pool, msg);
        ev_new(EV_RESPONSE, leg->id, c->id, code, flags, f, 5, 8u);
        return;
    }
    if (tsx->state == PJSIP_TSX_STATE_TERMINATED || tsx->state == PJSIP_TSX_STATE_COMPLETED) {
        c->done = 1;
        if (tsx->method.id == PJSIP_INVITE_METHOD && leg) leg->uac_invite_pending = 0;
        if (!leg) return;
        code = tsx->status_code >= 300 ? tsx->status_code : 408;
        f[0] = tsx->status_text;
        f[1] = tsx->method.name;
        f[2].ptr = NULL; f[2].slen = -1; f[3] = f[2];
        f[4] = pj_str("");
        ev_new(EV_RESPONSE, leg->id, c->id, code, F_LOCAL, f, 5, 0);
    }
}

static void gw_on_tsx_state(pjsip_transaction *tsx, pjsip_event *e)
{
    pjsip_dialog *dlg = pjsip_tsx_get_dlg(tsx);
    leg_t *leg = leg_of_dlg(dlg);
    void *md = tsx->mod_data[mod_gw.id];

    if (tsx->role == PJSIP_ROLE_UAC) {
        creq_t *c = (creq_t *)md;
        if (!c || c->magic != CREQ_MAGIC) return;
        if (c->initial) {
            if (leg) on_uac_invite_state(leg, tsx, e, c);
            return;
        }
        on_uac_request_state(leg, tsx, e, c);
        return;
    }

    /* UAS transactions */
    if (tsx->state == PJSIP_TSX_STATE_TRYING && e->type == PJSIP_EVENT_TSX_STATE &&
        e->body.tsx_state.type == PJSIP_EVENT_RX_MSG && dlg) {
        on_in_dialog_request(dlg, e->body.tsx_state.src.rdata);
        return;
    }
    if (tsx->state != PJSIP_TSX_STATE_TERMINATED) return;
    if (md) {                                    /* Python never answered and the tsx is gone */
        sreq_t *r = (sreq_t *)md;
        pj_str_t none = {NULL, -1};
        if (r->leg && !r->leg->ended) {
            if (r->is_invite) r->leg->uas_invite_pending = 0;
            ev_new(EV_REQUEST_GONE, r->leg->id, r->id, 0, 0, &none, 0, 0);
        }
        sreq_release(r);
    }
    if (!leg) return;
    if (tsx == leg->ack_tsx) {
        pj_str_t none = {NULL, -1};
        int initial = leg->ack_initial;
        leg->ack_tsx = NULL;
        ev_new(EV_ACK_TIMEOUT, leg->id, 0, 0, initial ? F_INITIAL : 0, &none, 0, 0);
    }
    if (tsx == leg->inv_tsx) {
        leg->inv_tsx = NULL;
        if (leg->final_code == 0) {
            /* Terminated before we answered: the bridge's transport failed. */
            pj_str_t reason = tsx->status_text;
            ev_new(EV_ENDED, leg->id, 0, tsx->status_code ? tsx->status_code : 503, F_LOCAL, &reason, 1, 0);
            leg_detach(leg);
        }
    }
}

static pjsip_module mod_gw = {
    NULL, NULL, {"mod-gw", 6}, -1,
    PJSIP_MOD_PRIORITY_APPLICATION - 1,
    NULL, NULL, NULL, NULL,
    &gw_on_rx_request, &gw_on_rx_response, NULL, NULL, &gw_on_tsx_state,
};

/* ------------------------------------------------------------------------ */
/* Requests outside any dialog (OPTIONS health pings) and registrations     */

static void ood_on_complete(void *token, pjsip_event *e)
{
    unsigned long long id = (unsigned long long)(uintptr_t)token;
    pjsip_transaction *tsx;
    pj_str_t f[5];
    int code, flags = 0;
    if (e->type != PJSIP_EVENT_TSX_STATE) return;
    tsx = e->body.tsx_state.tsx;
    code = tsx->status_code;
    if (code < 200) return;
    if (e->body.tsx_state.type == PJSIP_EVENT_RX_MSG) {
        f[0] = e->body.tsx_state.src.rdata->msg_info.msg->line.status.reason;
    } else {
        f[0] = tsx->status_text;
        flags = F_LOCAL;
    }
    f[1] = tsx->method.name;
    f[2].ptr = NULL; f[2].slen = -1; f[3] = f[2];
    f[4] = pj_str("");
    ev_new(EV_RESPONSE, 0, id, code, flags, f, 5, 0);
}

/* request(method, target, from, headers) -> request id: a request outside
 * any dialog (an OPTIONS ping to a trunk); its final answer (or a local 408
 * or 503) comes back as EV_RESPONSE with leg 0. */
static PyObject *py_request(PyObject *self, PyObject *args)
{
    const char *method, *target, *from, *headers = NULL;
    Py_ssize_t ml, tl, fl, hl = 0;
    pj_str_t smethod, starget, sfrom;
    pjsip_method m;
    pjsip_tx_data *tdata;
    unsigned long long id;
    pj_status_t st;
    extras_t x = {0};
    (void)self;
    if (check_ready() < 0) return NULL;
    if (!PyArg_ParseTuple(args, "s#s#s#z#", &method, &ml, &target, &tl, &from, &fl, &headers, &hl)) return NULL;
    smethod.ptr = (char *)method; smethod.slen = ml;
    starget.ptr = (char *)target; starget.slen = tl;
    sfrom.ptr = (char *)from; sfrom.slen = fl;
    pjsip_method_init_np(&m, &smethod);
    st = pjsip_endpt_create_request(endpt, &m, &starget, &sfrom, &starget, NULL, NULL, -1, NULL, &tdata);
    if (st != PJ_SUCCESS) {
        char err[PJ_ERR_MSG_SIZE];
        pj_strerror(st, err, sizeof(err));
        PyErr_Format(PyExc_ValueError, "cannot create the %s: %s", method, err);
        return NULL;
    }
    x.headers = headers; x.hlen = hl;
    if (apply_extras(tdata, &x) < 0) { pjsip_tx_data_dec_ref(tdata); return NULL; }
    id = next_id++;
    st = pjsip_endpt_send_request(endpt, tdata, -1, (void *)(uintptr_t)id, &ood_on_complete);
    if (st != PJ_SUCCESS) return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong(id);
}

typedef struct reg {
    unsigned long long id;
    pjsip_regc *regc;
    struct reg *next;
} reg_t;
static reg_t *regs;

static void reg_on_result(struct pjsip_regc_cbparam *param)
{
    reg_t *r = (reg_t *)param->token;
    pj_str_t f[1];
    int code = param->code;
    if (param->status != PJ_SUCCESS && code < 200) code = 0;
    f[0] = param->reason;
    ev_new(EV_REGISTRATION, 0, r->id, code,
           param->expiration == PJSIP_REGC_EXPIRATION_NOT_SPECIFIED ? 0 : (int)param->expiration, f, 1, 0);
}

/* register(registrar, aor, contact, expires, username, password) -> id: keep a
 * registration with a carrier (refreshed before it expires, digest answered);
 * every outcome comes back as EV_REGISTRATION. */
static PyObject *py_register(PyObject *self, PyObject *args)
{
    const char *registrar, *aor, *contact, *user = NULL, *pw = NULL;
    Py_ssize_t rl, al, cl, ul = 0, pl = 0;
    unsigned expires;
    pj_str_t sreg, saor, scontact;
    reg_t *r;
    pjsip_tx_data *tdata;
    pj_status_t st;
    (void)self;
    if (check_ready() < 0) return NULL;
    if (!PyArg_ParseTuple(args, "s#s#s#Iz#z#", &registrar, &rl, &aor, &al, &contact, &cl, &expires, &user, &ul,
                          &pw, &pl))
        return NULL;
    r = (reg_t *)calloc(1, sizeof(reg_t));
    if (!r) return PyErr_NoMemory();
    r->id = next_id++;
    if (pjsip_regc_create(endpt, r, &reg_on_result, &r->regc) != PJ_SUCCESS) { free(r); Py_RETURN_NONE; }
    sreg.ptr = (char *)registrar; sreg.slen = rl;
    saor.ptr = (char *)aor; saor.slen = al;
    scontact.ptr = (char *)contact; scontact.slen = cl;
    st = pjsip_regc_init(r->regc, &sreg, &saor, &saor, 1, &scontact, expires);
    if (st == PJ_SUCCESS && user && ul) {
        pjsip_cred_info cred;
        digest_credentials(&cred, user, ul, pw, pl);
        st = pjsip_regc_set_credentials(r->regc, 1, &cred);
    }
    if (st == PJ_SUCCESS) st = pjsip_regc_register(r->regc, PJ_TRUE, &tdata);
    if (st == PJ_SUCCESS) {
        add_identity(tdata);
        st = pjsip_regc_send(r->regc, tdata);
    }
    if (st != PJ_SUCCESS) {
        char err[PJ_ERR_MSG_SIZE];
        pjsip_regc_destroy(r->regc);
        free(r);
        pj_strerror(st, err, sizeof(err));
        PyErr_Format(PyExc_ValueError, "cannot register with %s: %s", registrar, err);
        return NULL;
    }
    r->next = regs;
    regs = r;
    return PyLong_FromUnsignedLongLong(r->id);
}

/* unregister_all(): end every registration (at shutdown). */
static PyObject *py_unregister_all(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    while (regs) {
        reg_t *r = regs;
        pjsip_tx_data *tdata;
        regs = r->next;
        if (pjsip_regc_unregister(r->regc, &tdata) == PJ_SUCCESS) pjsip_regc_send(r->regc, tdata);
        pjsip_regc_destroy2(r->regc, PJ_TRUE);
        free(r);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* Waking the loop from other threads                                        */

static int wake_rx = -1, wake_tx = -1;
static struct sockaddr_in wake_addr;
static volatile int wake_pending;
static pj_ioqueue_key_t *wake_key;
static pj_ioqueue_op_key_t wake_op;
static char wake_buf[64];

static void wake_on_read(pj_ioqueue_key_t *key, pj_ioqueue_op_key_t *op, pj_ssize_t n)
{
    pj_ssize_t size;
    char drain[64];
    (void)op; (void)n;
    while (recv(wake_rx, drain, sizeof(drain), MSG_DONTWAIT) > 0) {}
    __atomic_store_n(&wake_pending, 0, __ATOMIC_SEQ_CST);
    do {
        size = sizeof(wake_buf);
    } while (pj_ioqueue_recv(key, &wake_op, wake_buf, &size, 0) == PJ_SUCCESS);
}

static int wake_init(void)
{
    socklen_t len = sizeof(wake_addr);
    pj_ioqueue_callback cb;
    pj_ssize_t size = sizeof(wake_buf);
    pj_status_t st;

    wake_rx = socket(AF_INET, SOCK_DGRAM, 0);
    wake_tx = socket(AF_INET, SOCK_DGRAM, 0);
    if (wake_rx < 0 || wake_tx < 0) return -1;
    memset(&wake_addr, 0, sizeof(wake_addr));
    wake_addr.sin_family = AF_INET;
    wake_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(wake_rx, (struct sockaddr *)&wake_addr, sizeof(wake_addr)) != 0) return -1;
    if (getsockname(wake_rx, (struct sockaddr *)&wake_addr, &len) != 0) return -1;
    fcntl(wake_tx, F_SETFL, O_NONBLOCK);
    pj_bzero(&cb, sizeof(cb));
    cb.on_read_complete = &wake_on_read;
    if (pj_ioqueue_register_sock(core_pool, pjsip_endpt_get_ioqueue(endpt), wake_rx, NULL, &cb, &wake_key) != PJ_SUCCESS)
        return -1;
    pj_ioqueue_op_key_init(&wake_op, sizeof(wake_op));
    st = pj_ioqueue_recv(wake_key, &wake_op, wake_buf, &size, 0);
    if (st != PJ_EPENDING && st != PJ_SUCCESS) return -1;
    return 0;
}

/* The Allow, Supported and Accept headers pjsip adds to 18x/2xx responses
 * come from the endpoint's capability table, which pjsua fills for an
 * endpoint (100rel, replaces, REFER, SUBSCRIBE...). The gateway says what
 * it does instead. */
static void set_capability(int htype, const pj_str_t *value)
{
    pj_str_t tags[PJSIP_GENERIC_ARRAY_MAX_COUNT];
    unsigned n = 0;
    pj_ssize_t i = 0;
    pjsip_generic_array_hdr *h;
    while (i < value->slen && n < PJSIP_GENERIC_ARRAY_MAX_COUNT) {
        pj_ssize_t s, e;
        while (i < value->slen && (value->ptr[i] == ',' || value->ptr[i] == ' ')) ++i;
        s = i;
        while (i < value->slen && value->ptr[i] != ',' && value->ptr[i] != ' ') ++i;
        e = i;
        if (e > s) str_from(core_pool, &tags[n++], value->ptr + s, e - s);
    }
    h = (pjsip_generic_array_hdr *)pjsip_endpt_get_capability(endpt, htype, NULL);
    if (h) {
        unsigned k;
        for (k = 0; k < n; ++k) h->values[k] = tags[k];
        h->count = n;
    } else if (n) {
        pjsip_endpt_add_capability(endpt, &mod_gw, htype, NULL, n, tags);
    }
}

/* ------------------------------------------------------------------------ */
/* Python API                                                                */

static int check_ready(void)
{
    if (!endpt) {
        PyErr_SetString(PyExc_RuntimeError, "sipcore.init() has not been called");
        return -1;
    }
    return 0;
}

static PyObject *py_init(PyObject *self, PyObject *args)
{
    PyObject *h;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &h)) return NULL;
    if (!PyCallable_Check(h)) { PyErr_SetString(PyExc_TypeError, "handler must be callable"); return NULL; }
    if (endpt) {
        Py_XSETREF(handler, Py_NewRef(h));
        Py_RETURN_NONE;
    }
    endpt = pjsua_get_pjsip_endpt();
    if (!endpt) { PyErr_SetString(PyExc_RuntimeError, "pjsua is not initialised (libInit first)"); return NULL; }
    core_pool = pjsip_endpt_create_pool(endpt, "sipcore", 4096, 4096);
    legs_by_id = pj_hash_create(core_pool, 4093);
    sreqs_by_id = pj_hash_create(core_pool, 1021);
    if (pjsip_endpt_register_module(endpt, &mod_filter) != PJ_SUCCESS ||
        pjsip_endpt_register_module(endpt, &mod_gw) != PJ_SUCCESS) {
        PyErr_SetString(PyExc_RuntimeError, "cannot register the gateway's pjsip modules");
        endpt = NULL;
        return NULL;
    }
    pjsip_tpmgr_set_drop_data_cb(pjsip_endpt_get_tpmgr(endpt), &on_dropped);
    /* RFC 3261 18.1.1 would move a request over 1300 bytes to TCP even toward a
     * UDP-only trunk; each trunk's URI decides its transport instead. */
    pjsip_cfg()->endpt.disable_tcp_switch = PJ_TRUE;
    if (wake_init() != 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot create the wake-up socket");
        return NULL;
    }
    handler = Py_NewRef(h);
    contact_user = pj_str("gw");
    allow_value = pj_str("INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, MESSAGE, NOTIFY");
    supported_value = pj_str("timer");
    set_capability(PJSIP_H_ALLOW, &allow_value);
    set_capability(PJSIP_H_SUPPORTED, &supported_value);
    set_capability(PJSIP_H_ACCEPT, &STR_APP_SDP);
    Py_RETURN_NONE;
}

static int parse_cidrs(PyObject *seq)
{
    Py_ssize_t n, i;
    PyObject *fast = PySequence_Fast(seq, "trusted must be a sequence of (family, address bytes, prefix)");
    if (!fast) return -1;
    n = PySequence_Fast_GET_SIZE(fast);
    free(trusted);
    trusted = (cidr_t *)calloc(n ? n : 1, sizeof(cidr_t));
    trusted_n = 0;
    for (i = 0; i < n; ++i) {
        int fam, prefix;
        const char *addr;
        Py_ssize_t alen;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "iy#i", &fam, &addr, &alen, &prefix)) {
            Py_DECREF(fast);
            return -1;
        }
        if ((fam != 4 && fam != 6) || alen != (fam == 4 ? 4 : 16) || prefix < 0 || prefix > alen * 8) {
            PyErr_SetString(PyExc_ValueError, "bad CIDR");
            Py_DECREF(fast);
            return -1;
        }
        trusted[trusted_n].family = fam;
        memcpy(trusted[trusted_n].addr, addr, alen);
        trusted[trusted_n].prefix = prefix;
        ++trusted_n;
    }
    Py_DECREF(fast);
    return 0;
}

static void set_pjstr(pj_str_t *dst, const char *s, Py_ssize_t n)
{
    str_from(core_pool, dst, s, n);
}

static PyObject *py_configure(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"trusted", "untrusted", "require_tls", "server", "user_agent", "contact_user",
                             "allow", "supported", NULL};
    PyObject *cidrs = NULL;
    const char *untrusted = NULL, *server = NULL, *ua = NULL, *cu = NULL, *allow = NULL, *sup = NULL;
    Py_ssize_t sl = 0, ul = 0, cl = 0, al = 0, spl = 0;
    int rtls = -1;
    (void)self;
    if (check_ready() < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Ozpz#z#z#z#z#", kwlist, &cidrs, &untrusted, &rtls,
                                     &server, &sl, &ua, &ul, &cu, &cl, &allow, &al, &sup, &spl))
        return NULL;
    if (cidrs && cidrs != Py_None && parse_cidrs(cidrs) < 0) return NULL;
    if (untrusted) {
        if (!strcmp(untrusted, "drop")) untrusted_reject = 0;
        else if (!strcmp(untrusted, "reject")) untrusted_reject = 1;
        else { PyErr_SetString(PyExc_ValueError, "untrusted must be 'drop' or 'reject'"); return NULL; }
    }
    if (rtls >= 0) require_tls = rtls;
    if (server) set_pjstr(&server_hdr, server, sl);
    if (ua) set_pjstr(&ua_hdr, ua, ul);
    if (cu) set_pjstr(&contact_user, cu, cl);
    if (allow) { set_pjstr(&allow_value, allow, al); set_capability(PJSIP_H_ALLOW, &allow_value); }
    if (sup) { set_pjstr(&supported_value, sup, spl); set_capability(PJSIP_H_SUPPORTED, &supported_value); }
    Py_RETURN_NONE;
}

static PyObject *event_tuple(const event_t *ev)
{
    PyObject *t = PyTuple_New(5 + NFIELDS);
    unsigned i;
    if (!t) return NULL;
    PyTuple_SET_ITEM(t, 0, PyLong_FromLong(ev->kind));
    PyTuple_SET_ITEM(t, 1, PyLong_FromUnsignedLongLong(ev->leg));
    PyTuple_SET_ITEM(t, 2, PyLong_FromUnsignedLongLong(ev->req));
    PyTuple_SET_ITEM(t, 3, PyLong_FromLong(ev->code));
    PyTuple_SET_ITEM(t, 4, PyLong_FromLong(ev->flags));
    for (i = 0; i < NFIELDS; ++i) {
        PyObject *v;
        if (ev->f[i].slen < 0) v = Py_NewRef(Py_None);
        else if (ev->bytes_mask & (1u << i)) v = PyBytes_FromStringAndSize(ev->f[i].ptr, ev->f[i].slen);
        else v = PyUnicode_DecodeUTF8(ev->f[i].ptr ? ev->f[i].ptr : "", ev->f[i].slen, "surrogateescape");
        if (!v) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, 5 + i, v);
    }
    return t;
}

/* Hand queued events to Python, until none is left. */
static long deliver(void)
{
    long n = 0;
    while (ev_head) {
        event_t *ev = ev_head;
        PyObject *t, *r;
        ev_head = ev->next;
        if (!ev_head) ev_tail = NULL;
        --ev_count;
        t = event_tuple(ev);
        free(ev);
        ++n;
        if (!t) { PyErr_WriteUnraisable(handler); continue; }
        r = PyObject_Call(handler, t, NULL);
        Py_DECREF(t);
        if (!r) PyErr_WriteUnraisable(handler);
        else Py_DECREF(r);
    }
    graveyard_empty();
    return n;
}

static PyObject *py_poll(PyObject *self, PyObject *args)
{
    int timeout_ms = 0;
    long n;
    (void)self;
    if (!PyArg_ParseTuple(args, "|i", &timeout_ms)) return NULL;
    if (check_ready() < 0) return NULL;
    n = deliver();
    if (timeout_ms < 0) timeout_ms = 0;
    if (n || ev_head) timeout_ms = 0;
    Py_BEGIN_ALLOW_THREADS
    pjsua_handle_events((unsigned)timeout_ms);
    Py_END_ALLOW_THREADS
    n += deliver();
    return PyLong_FromLong(n);
}

static PyObject *py_wakeup(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    if (wake_tx >= 0 && !__atomic_exchange_n(&wake_pending, 1, __ATOMIC_SEQ_CST))
        (void)sendto(wake_tx, "w", 1, 0, (struct sockaddr *)&wake_addr, sizeof(wake_addr));
    Py_RETURN_NONE;
}

static leg_t *leg_arg(unsigned long long id)
{
    leg_t *leg = leg_lookup(id);
    return leg;
}

/* answer(leg, code, reason, headers, ctype, body) -> bool: respond to the
 * initial INVITE of a bridge leg (provisional or final). */
static PyObject *py_answer(PyObject *self, PyObject *args)
{
    unsigned long long id;
    int code;
    const char *reason = NULL;
    Py_ssize_t rlen = 0;
    extras_t x = {0};
    leg_t *leg;
    pjsip_tx_data *t;
    pj_str_t rs;
    (void)self;
    if (!PyArg_ParseTuple(args, "Kiz#z#z#z#", &id, &code, &reason, &rlen, &x.headers, &x.hlen, &x.ctype, &x.clen,
                          &x.body, &x.blen))
        return NULL;
    if (code < 101 || code > 699) { PyErr_SetString(PyExc_ValueError, "status code out of range"); return NULL; }
    leg = leg_arg(id);
    if (!leg || leg->role != ROLE_UAS || !leg->inv_tsx || !leg->tmpl || leg->final_code ||
        leg->inv_tsx->state >= PJSIP_TSX_STATE_COMPLETED)
        Py_RETURN_FALSE;
    rs.ptr = (char *)reason; rs.slen = rlen;
    t = build_response(leg->tmpl, code, &rs);
    if (!t) Py_RETURN_FALSE;
    if (apply_extras(t, &x) < 0) { pjsip_tx_data_dec_ref(t); return NULL; }
    if (code >= 200) {
        leg->final_code = code;
        if (code < 300) { leg->ack_tsx = leg->inv_tsx; leg->ack_initial = 1; }
    }
    if (pjsip_dlg_send_response(leg->dlg, leg->inv_tsx, t) != PJ_SUCCESS) {
        if (code >= 300) leg_detach(leg);
        Py_RETURN_FALSE;
    }
    if (code >= 300) leg_detach(leg);
    Py_RETURN_TRUE;
}

/* respond(req, code, reason, headers, ctype, body) -> bool */
static PyObject *py_respond(PyObject *self, PyObject *args)
{
    unsigned long long id;
    int code;
    const char *reason = NULL;
    Py_ssize_t rlen = 0;
    extras_t x = {0};
    sreq_t *r;
    pjsip_tx_data *t;
    pjsip_dialog *dlg;
    pj_str_t rs;
    (void)self;
    if (!PyArg_ParseTuple(args, "Kiz#z#z#z#", &id, &code, &reason, &rlen, &x.headers, &x.hlen, &x.ctype, &x.clen,
                          &x.body, &x.blen))
        return NULL;
    if (code < 100 || code > 699) { PyErr_SetString(PyExc_ValueError, "status code out of range"); return NULL; }
    r = (sreq_t *)pj_hash_get(sreqs_by_id, &id, sizeof(id), NULL);
    if (!r || r->leg->ended || !r->leg->dlg || r->tsx->state >= PJSIP_TSX_STATE_COMPLETED) Py_RETURN_FALSE;
    dlg = r->leg->dlg;
    rs.ptr = (char *)reason; rs.slen = rlen;
    t = build_response(r->tmpl, code, &rs);
    if (!t) Py_RETURN_FALSE;
    if (apply_extras(t, &x) < 0) { pjsip_tx_data_dec_ref(t); return NULL; }
    if (code >= 200 && r->is_invite) {
        r->leg->uas_invite_pending = 0;
        if (code < 300) { r->leg->ack_tsx = r->tsx; r->leg->ack_initial = 0; }
    }
    if (pjsip_dlg_send_response(dlg, r->tsx, t) != PJ_SUCCESS) {
        if (code >= 200) sreq_release(r);
        Py_RETURN_FALSE;
    }
    if (code >= 200) sreq_release(r);
    Py_RETURN_TRUE;
}

/* dial(from, to, target, contact, headers, ctype, body, username, password) -> leg id */
/* The INVITE goes to `hop` ("ip:port", one address a resolution returned)
 * while its Request-URI keeps the carrier's host name: pjsip skips its own
 * resolution when the destination is set (and a CANCEL or a digest retry
 * inherits it). */
static int pin_next_hop(pjsip_tx_data *tdata, const char *hop, Py_ssize_t hl, const char *tp)
{
    pj_str_t shop;
    pj_sockaddr sa;
    pjsip_transport_type_e type;
    pj_str_t stp;
    shop.ptr = (char *)hop; shop.slen = hl;
    if (pj_sockaddr_parse(pj_AF_UNSPEC(), 0, &shop, &sa) != PJ_SUCCESS || pj_sockaddr_get_port(&sa) == 0) {
        PyErr_Format(PyExc_ValueError, "bad next hop %s (expected ip:port)", hop);
        return -1;
    }
    stp = pj_str((char *)(tp && *tp ? tp : "udp"));
    type = pjsip_transport_get_type_from_name(&stp);
    if (type == PJSIP_TRANSPORT_UNSPECIFIED) {
        PyErr_Format(PyExc_ValueError, "bad transport %s for the next hop", tp);
        return -1;
    }
    if (sa.addr.sa_family == pj_AF_INET6()) type = (pjsip_transport_type_e)((int)type | PJSIP_TRANSPORT_IPV6);
    tdata->dest_info.addr.count = 1;
    tdata->dest_info.cur_addr = 0;
    pj_bzero(&tdata->dest_info.addr.entry[0], sizeof(tdata->dest_info.addr.entry[0]));
    tdata->dest_info.addr.entry[0].type = type;
    pj_memcpy(&tdata->dest_info.addr.entry[0].addr, &sa, sizeof(sa));
    tdata->dest_info.addr.entry[0].addr_len = pj_sockaddr_get_len(&sa);
    return 0;
}

/* resolve(host, port, transport) -> id: RFC 3263 lookup of a trunk's host
 * through pjsip's resolver (SRV, then A/AAAA; NAPTR is not implemented by
 * pjsip). Asynchronous with the nameservers configured; the answer comes as
 * EV_RESOLVED. Without a resolver pjsip would call getaddrinfo() on this
 * thread, so Python resolves in a worker instead and never calls this. */
typedef struct resq { unsigned long long id; pj_pool_t *pool; } resq_t;

static void res_on_done(pj_status_t status, void *token, const struct pjsip_server_addresses *addr)
{
    resq_t *q = (resq_t *)token;
    char lines[PJSIP_MAX_RESOLVED_ADDRESSES * (PJ_INET6_ADDRSTRLEN + 24)];
    char err[PJ_ERR_MSG_SIZE];
    pj_str_t f[2];
    unsigned i, n = 0;
    size_t used = 0;
    lines[0] = 0;
    err[0] = 0;
    if (status == PJ_SUCCESS) {
        for (i = 0; i < addr->count && i < PJSIP_MAX_RESOLVED_ADDRESSES; ++i) {
            char ip[PJ_INET6_ADDRSTRLEN + 10];
            const char *tp = pjsip_transport_get_type_name(addr->entry[i].type);
            pj_sockaddr_print(&addr->entry[i].addr, ip, sizeof(ip), 3);  /* [v6]:port or v4:port */
            used += (size_t)snprintf(lines + used, sizeof(lines) - used, "%s%s %s", n ? "\n" : "", tp, ip);
            if (used >= sizeof(lines)) { used = sizeof(lines) - 1; break; }
            ++n;
        }
    } else {
        pj_strerror(status, err, sizeof(err));
    }
    f[0] = pj_str(lines);
    f[1] = pj_str(err);
    ev_new(EV_RESOLVED, 0, q->id, (int)n, 0, f, 2, 0);
    pj_pool_release(q->pool);
}

static PyObject *py_resolve(PyObject *self, PyObject *args)
{
    const char *host, *tp;
    Py_ssize_t hl;
    int port;
    pjsip_host_info target;
    pj_str_t stp;
    resq_t *q;
    pj_pool_t *pool;
    (void)self;
    if (check_ready() < 0) return NULL;
    if (!PyArg_ParseTuple(args, "s#is", &host, &hl, &port, &tp)) return NULL;
    pool = pjsip_endpt_create_pool(endpt, "res%p", 512, 512);
    if (!pool) return PyErr_NoMemory();
    q = PJ_POOL_ZALLOC_T(pool, resq_t);
    q->id = next_id++;
    q->pool = pool;
    pj_bzero(&target, sizeof(target));
    target.addr.host.ptr = (char *)pj_pool_alloc(pool, hl + 1);
    pj_memcpy(target.addr.host.ptr, host, hl);
    target.addr.host.ptr[hl] = 0;
    target.addr.host.slen = hl;
    target.addr.port = port;
    stp = pj_str((char *)tp);
    target.type = *tp ? pjsip_transport_get_type_from_name(&stp) : PJSIP_TRANSPORT_UNSPECIFIED;
    target.flag = pjsip_transport_get_flag_from_type(target.type);
    {
        unsigned long long id = q->id;
        pjsip_endpt_resolve(endpt, pool, &target, q, &res_on_done);  /* may answer at once (cache, IP) */
        return PyLong_FromUnsignedLongLong(id);
    }
}

/* set_nameservers([(ip, port), ...]): give pjsip a DNS resolver (pjsua's own
 * setting takes no ports). Every lookup through it is asynchronous. */
static PyObject *py_set_nameservers(PyObject *self, PyObject *args)
{
    PyObject *list;
    pj_str_t servers[PJ_DNS_RESOLVER_MAX_NS];
    pj_uint16_t ports[PJ_DNS_RESOLVER_MAX_NS];
    pj_dns_resolver *res = pjsip_endpt_get_resolver(endpt);
    Py_ssize_t i, n;
    pj_status_t st;
    (void)self;
    if (check_ready() < 0) return NULL;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list)) return NULL;
    n = PyList_GET_SIZE(list);
    if (n < 1 || n > PJ_DNS_RESOLVER_MAX_NS) {
        PyErr_Format(PyExc_ValueError, "between 1 and %d nameservers", PJ_DNS_RESOLVER_MAX_NS);
        return NULL;
    }
    for (i = 0; i < n; ++i) {
        const char *ip;
        int port;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "si", &ip, &port)) return NULL;
        servers[i] = pj_str((char *)ip);
        ports[i] = (pj_uint16_t)port;
    }
    if (!res) {
        st = pjsip_endpt_create_resolver(endpt, &res);
        if (st == PJ_SUCCESS) st = pjsip_endpt_set_resolver(endpt, res);
        if (st != PJ_SUCCESS) {
            PyErr_SetString(PyExc_RuntimeError, "cannot create the DNS resolver");
            return NULL;
        }
    }
    st = pj_dns_resolver_set_ns(res, (unsigned)n, servers, ports);
    if (st != PJ_SUCCESS) {
        char err[PJ_ERR_MSG_SIZE];
        pj_strerror(st, err, sizeof(err));
        PyErr_Format(PyExc_ValueError, "bad nameserver: %s", err);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* resolver() -> bool: whether pjsip has a DNS resolver (nameservers configured). */
static PyObject *py_has_resolver(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    if (check_ready() < 0) return NULL;
    return PyBool_FromLong(pjsip_endpt_get_resolver(endpt) != NULL);
}

static PyObject *py_dial(PyObject *self, PyObject *args)
{
    const char *from, *to, *target, *contact, *user = NULL, *pw = NULL, *hop = NULL, *hop_tp = NULL;
    Py_ssize_t fl, tl, gl, cl, ul = 0, pl = 0, hl = 0;
    extras_t x = {0};
    pj_str_t sfrom, sto, starget, scontact;
    pjsip_dialog *dlg;
    leg_t *leg;
    pjsip_tx_data *tdata;
    creq_t *c;
    pj_status_t st;
    (void)self;
    if (check_ready() < 0) return NULL;
    if (!PyArg_ParseTuple(args, "s#s#s#s#z#z#z#z#z#|z#z", &from, &fl, &to, &tl, &target, &gl, &contact, &cl,
                          &x.headers, &x.hlen, &x.ctype, &x.clen, &x.body, &x.blen, &user, &ul, &pw, &pl,
                          &hop, &hl, &hop_tp))
        return NULL;
    sfrom.ptr = (char *)from; sfrom.slen = fl;
    sto.ptr = (char *)to; sto.slen = tl;
    starget.ptr = (char *)target; starget.slen = gl;
    scontact.ptr = (char *)contact; scontact.slen = cl;
    st = pjsip_dlg_create_uac(pjsip_ua_instance(), &sfrom, &scontact, &sto, &starget, &dlg);
    if (st != PJ_SUCCESS) {
        char err[PJ_ERR_MSG_SIZE];
        pj_strerror(st, err, sizeof(err));
        PyErr_Format(PyExc_ValueError, "cannot create the trunk dialog: %s", err);
        return NULL;
    }
    pjsip_dlg_inc_lock(dlg);
    leg = leg_create(dlg, ROLE_UAC);
    if (!leg) { pjsip_dlg_dec_lock(dlg); return PyErr_NoMemory(); }
    if (user && ul) {
        pjsip_cred_info cred;
        digest_credentials(&cred, user, ul, pw, pl);
        pjsip_auth_clt_set_credentials(&dlg->auth_sess, 1, &cred);
    }
    st = pjsip_dlg_create_request(dlg, &pjsip_invite_method, -1, &tdata);
    if (st != PJ_SUCCESS) goto failed;
    if (apply_extras(tdata, &x) < 0 || (hop && hl && pin_next_hop(tdata, hop, hl, hop_tp) < 0)) {
        pjsip_tx_data_dec_ref(tdata);
        leg_detach(leg);
        pjsip_dlg_dec_lock(dlg);
        return NULL;
    }
    c = PJ_POOL_ZALLOC_T(tdata->pool, creq_t);
    c->magic = CREQ_MAGIC;
    c->initial = 1;
    st = pjsip_dlg_send_request(dlg, tdata, mod_gw.id, c);
    if (st != PJ_SUCCESS) goto failed;
    pjsip_dlg_dec_lock(dlg);
    return PyLong_FromUnsignedLongLong(leg->id);

failed:
    {
        char err[PJ_ERR_MSG_SIZE];
        unsigned long long lid = leg->id;
        pj_strerror(st, err, sizeof(err));
        if (!leg->ended) leg_detach(leg);
        pjsip_dlg_dec_lock(dlg);
        (void)lid;
        PyErr_Format(PyExc_ConnectionError, "cannot send the INVITE: %s", err);
        return NULL;
    }
}

/* ack(leg, ctype, body) -> bool: the ACK owed for a 2xx to an INVITE. */
static PyObject *py_ack(PyObject *self, PyObject *args)
{
    unsigned long long id;
    extras_t x = {0};
    leg_t *leg;
    (void)self;
    if (!PyArg_ParseTuple(args, "Kz#z#", &id, &x.ctype, &x.clen, &x.body, &x.blen)) return NULL;
    leg = leg_arg(id);
    if (!leg || !leg->ack_cseq) Py_RETURN_FALSE;
    send_ack(leg, leg->dlg, leg->ack_cseq, &x);
    Py_RETURN_TRUE;
}

/* cancel(leg, abandon=False) -> bool: CANCEL the trunk's initial INVITE
 * (held until a provisional response, RFC 3261 9.1). The leg ends with
 * EV_FAILED (487), or EV_ENDED if the trunk answers first. With `abandon`
 * and no provisional yet (a trunk that does not answer at all, given up for
 * the next one), the INVITE transaction is ended at once instead: EV_FAILED
 * (408, local) follows, and a 2xx that still comes is ACKed and BYEd. */
static PyObject *py_cancel(PyObject *self, PyObject *args)
{
    unsigned long long id;
    int abandon = 0;
    leg_t *leg;
    (void)self;
    if (!PyArg_ParseTuple(args, "K|p", &id, &abandon)) return NULL;
    leg = leg_arg(id);
    if (!leg || leg->role != ROLE_UAC || leg->final_code || leg->cancelling) Py_RETURN_FALSE;
    leg->cancelling = 1;
    if (leg->got_provisional) send_cancel(leg);
    else if (abandon && leg->inv_tsx) pjsip_tsx_terminate(leg->inv_tsx, PJSIP_SC_REQUEST_TIMEOUT);
    else leg->cancel_pending = 1;
    Py_RETURN_TRUE;
}

/* send(leg, method, headers, ctype, body) -> request id (or 0 if the leg is
 * gone). BYE ends the leg at once; its answer is not reported. */
static PyObject *py_send(PyObject *self, PyObject *args)
{
    unsigned long long id;
    const char *method;
    Py_ssize_t ml;
    extras_t x = {0};
    leg_t *leg;
    pjsip_method m;
    pj_str_t mname;
    pjsip_tx_data *tdata;
    creq_t *c;
    int is_bye;
    (void)self;
    if (!PyArg_ParseTuple(args, "Ks#z#z#z#", &id, &method, &ml, &x.headers, &x.hlen, &x.ctype, &x.clen, &x.body,
                          &x.blen))
        return NULL;
    leg = leg_arg(id);
    if (!leg || !leg->dlg) return PyLong_FromLong(0);
    mname.ptr = (char *)method; mname.slen = ml;
    pjsip_method_init_np(&m, &mname);
    if (m.id == PJSIP_ACK_METHOD || m.id == PJSIP_CANCEL_METHOD) {
        PyErr_SetString(PyExc_ValueError, "use ack() or cancel()");
        return NULL;
    }
    is_bye = m.id == PJSIP_BYE_METHOD;
    /* Nothing but BYE... before the dialog is confirmed on our side. */
    if (leg->role == ROLE_UAS && (leg->final_code == 0 || leg->final_code >= 300)) return PyLong_FromLong(0);
    if (leg->role == ROLE_UAC && (leg->final_code == 0 || leg->final_code >= 300)) return PyLong_FromLong(0);
    if (m.id == PJSIP_INVITE_METHOD && (leg->uac_invite_pending || leg->uas_invite_pending))
        return PyLong_FromLong(0);
    if (pjsip_dlg_create_request(leg->dlg, &m, -1, &tdata) != PJ_SUCCESS) return PyLong_FromLong(0);
    if (apply_extras(tdata, &x) < 0) { pjsip_tx_data_dec_ref(tdata); return NULL; }
    c = PJ_POOL_ZALLOC_T(tdata->pool, creq_t);
    c->magic = CREQ_MAGIC;
    c->id = is_bye ? 0 : next_id++;
    if (m.id == PJSIP_INVITE_METHOD) leg->uac_invite_pending = 1;
    {
        /* A 2xx we still owe an ACK for is ACKed before a BYE goes out. */
        if (is_bye && leg->ack_cseq) send_ack(leg, leg->dlg, leg->ack_cseq, NULL);
    }
    if (pjsip_dlg_send_request(leg->dlg, tdata, mod_gw.id, c) != PJ_SUCCESS) {
        if (m.id == PJSIP_INVITE_METHOD) leg->uac_invite_pending = 0;
        if (is_bye) leg_detach(leg);
        return PyLong_FromLong(0);
    }
    if (is_bye) {
        leg_detach(leg);
        return PyLong_FromLong(1);
    }
    return PyLong_FromUnsignedLongLong(c->id);
}

/* hangup(leg, code) -> bool: end the leg whatever its state (abort and
 * shutdown paths): a final `code` to an unanswered bridge, CANCEL to an
 * unanswered trunk, BYE to an answered leg. */
static PyObject *py_hangup(PyObject *self, PyObject *args)
{
    unsigned long long id;
    int code = 500;
    leg_t *leg;
    (void)self;
    if (!PyArg_ParseTuple(args, "K|i", &id, &code)) return NULL;
    if (code < 300 || code > 699) code = 500;
    leg = leg_arg(id);
    if (!leg) Py_RETURN_FALSE;
    if (leg->role == ROLE_UAS && leg->final_code == 0) {
        answer_initial(leg, code);
        leg_detach(leg);
        Py_RETURN_TRUE;
    }
    if (leg->role == ROLE_UAC && leg->final_code == 0) {
        if (!leg->cancelling) {
            leg->cancelling = 1;
            if (leg->got_provisional) send_cancel(leg);
            else leg->cancel_pending = 1;
        }
        Py_RETURN_TRUE;
    }
    if (leg->ack_cseq) send_ack(leg, leg->dlg, leg->ack_cseq, NULL);
    send_simple(leg->dlg, &pjsip_bye_method, NULL, NULL);
    leg_detach(leg);
    Py_RETURN_TRUE;
}

static PyObject *py_alive(PyObject *self, PyObject *args)
{
    unsigned long long id;
    (void)self;
    if (!PyArg_ParseTuple(args, "K", &id)) return NULL;
    return PyBool_FromLong(leg_lookup(id) != NULL);
}

static PyObject *py_stats(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    if (check_ready() < 0) return NULL;
    return Py_BuildValue("{s:I,s:I,s:I,s:I,s:I,s:K,s:K}",
                         "legs", live_legs, "pending_requests", live_sreqs, "queued_events", ev_count,
                         "dialog_sets", pjsip_ua_get_dlg_set_count(), "transactions",
                         pjsip_tsx_layer_get_tsx_count(), "refused", stat_refused, "malformed", stat_malformed);
}

/* set_timers(t1_ms, t2_ms, t4_ms): RFC 3261 timers for every transaction
 * (T1 500 ms, T2 4 s, T4 5 s by default); Timer H/B/F follow as 64*T1. */
static PyObject *py_set_timers(PyObject *self, PyObject *args)
{
    unsigned t1, t2, t4;
    (void)self;
    if (!PyArg_ParseTuple(args, "III", &t1, &t2, &t4)) return NULL;
    if (t1 < 10 || t1 > 10000 || t2 < t1 || t2 > 60000 || t4 < 10 || t4 > 60000) {
        PyErr_SetString(PyExc_ValueError, "timers out of range");
        return NULL;
    }
    pjsip_tsx_set_timers(t1, t2, t4, 64 * t1);
    Py_RETURN_NONE;
}

/* pjlib writes to C's stdout before the gateway's log writer is installed
 * (libCreate) and after it is gone (libDestroy); the caller points fd 1 at
 * /dev/null around those calls and flushes C's buffers before pointing it
 * back, so stdout carries JSON lines only. */
static PyObject *py_flush_stdio(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    fflush(NULL);
    Py_RETURN_NONE;
}

static PyObject *py_version(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return PyUnicode_FromString(pj_get_version());
}

static PyMethodDef methods[] = {
    {"init", py_init, METH_VARARGS, "init(handler): register the modules into pjsua's endpoint (after libInit)."},
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(trusted=, untrusted=, require_tls=, server=, user_agent=, contact_user=, allow=, supported=)."},
    {"poll", py_poll, METH_VARARGS, "poll(timeout_ms) -> events delivered: run pjsip, then the handler per event."},
    {"wakeup", py_wakeup, METH_NOARGS, "wakeup(): end the current poll early; callable from any thread."},
    {"answer", py_answer, METH_VARARGS, "answer(leg, code, reason, headers, ctype, body) -> bool."},
    {"respond", py_respond, METH_VARARGS, "respond(req, code, reason, headers, ctype, body) -> bool."},
    {"dial", py_dial, METH_VARARGS,
     "dial(from, to, target, contact, headers, ctype, body, username, password[, next_hop, transport]) -> leg id."},
    {"ack", py_ack, METH_VARARGS, "ack(leg, ctype, body) -> bool."},
    {"cancel", py_cancel, METH_VARARGS, "cancel(leg) -> bool."},
    {"send", py_send, METH_VARARGS, "send(leg, method, headers, ctype, body) -> request id, 0 if not sent."},
    {"hangup", py_hangup, METH_VARARGS, "hangup(leg, code=500) -> bool: end the leg whatever its state."},
    {"alive", py_alive, METH_VARARGS, "alive(leg) -> bool."},
    {"request", py_request, METH_VARARGS,
     "request(method, target, from, headers) -> request id: outside any dialog (EV_RESPONSE, leg 0)."},
    {"resolve", py_resolve, METH_VARARGS, "resolve(host, port, transport) -> id: RFC 3263 lookup (EV_RESOLVED)."},
    {"has_resolver", py_has_resolver, METH_NOARGS, "has_resolver() -> bool: nameservers are configured."},
    {"set_nameservers", py_set_nameservers, METH_VARARGS, "set_nameservers([(ip, port), ...]): pjsip's DNS resolver."},
    {"register", py_register, METH_VARARGS,
     "register(registrar, aor, contact, expires, username, password) -> id (EV_REGISTRATION)."},
    {"unregister_all", py_unregister_all, METH_NOARGS, "unregister_all(): end every registration."},
    {"stats", py_stats, METH_NOARGS, "stats() -> dict of live legs, pending requests, dialogs, transactions."},
    {"pj_version", py_version, METH_NOARGS, "the pjproject version compiled in."},
    {"flush_stdio", py_flush_stdio, METH_NOARGS, "fflush(NULL): C's stdio buffers out now."},
    {"set_timers", py_set_timers, METH_VARARGS, "set_timers(t1_ms, t2_ms, t4_ms): RFC 3261 transaction timers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "gateway._sipcore",
    "The gateway's SIP signalling engine: pjsip dialogs and transactions below pjsua.", -1, methods,
};

PyMODINIT_FUNC PyInit__sipcore(void)
{
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
#define K(name) PyModule_AddIntConstant(m, #name, name)
    K(EV_INVITE); K(EV_PROVISIONAL); K(EV_ANSWER); K(EV_FAILED); K(EV_REQUEST); K(EV_RESPONSE); K(EV_ACK);
    K(EV_ACK_TIMEOUT); K(EV_BYE); K(EV_CANCELLED); K(EV_ENDED); K(EV_REFUSED); K(EV_REQUEST_GONE);
    K(EV_REGISTRATION);
    K(EV_RESOLVED);
    K(F_RELIABLE); K(F_LOCAL); K(F_NEEDS_ACK); K(F_INITIAL); K(F_AFTER_CANCEL);
#undef K
    return m;
}
