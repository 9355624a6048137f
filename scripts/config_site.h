/* Capacity build of pjproject for dialout-gateway.
 *
 * The PyPI wheels are built with PJSUA_MAX_CALLS=4 and a 64-handle select()
 * ioqueue; a gateway needs thousands of dialogs and sockets. Everything here
 * is folded into the wheel cache key, so editing it triggers one rebuild. */
#define PJ_DEBUG                         0
#define PJ_LOG_MAX_LEVEL                 5

/* Calls and dialogs. The gateway's own C extension (csrc/) drives pjsip
 * dialogs and transactions directly and uses no pjsua call slot, so pjsua's
 * call table stays small; a relayed call is two dialogs and a handful of
 * transactions in flight. */
#define PJSUA_MAX_CALLS                  32
#define PJSIP_MAX_TSX_COUNT              (64 * 1024 - 1)
#define PJSIP_MAX_DIALOG_COUNT           (64 * 1024 - 1)

/* epoll ioqueue with room for every TCP connection and media socket. */
#define PJ_IOQUEUE_MAX_HANDLES           16384
#define PJ_IOQUEUE_MAX_EVENTS_IN_SINGLE_POLL 64

/* Bursts of hundreds of INVITEs per second must not be dropped by the kernel. */
#define PJSIP_UDP_SO_RCVBUF_SIZE         (8 * 1024 * 1024)
#define PJSIP_UDP_SO_SNDBUF_SIZE         (8 * 1024 * 1024)

/* The largest SIP message received or sent, UDP or TCP. pjsip's 4000 cuts a
 * bridge's offer with video and ICE candidates (a datagram beyond it is now
 * refused 400; over TCP it would be lost); 16 KB matches the INVITE size the
 * service accepts (gateway/service.py MAX_INVITE_BYTES). Each message being
 * built reserves this much in its pool while it lives. */
#define PJSIP_MAX_PKT_LEN                16384

/* A TCP/TLS listener must accept many bridges and connections at once. */
#define PJSIP_TCP_TRANSPORT_BACKLOG      1024
#define PJSIP_TLS_TRANSPORT_BACKLOG      1024
#define PJSIP_MAX_TRANSPORTS             (PJ_IOQUEUE_MAX_HANDLES / 4)

/* No video, no sound devices in a signalling-only relay. */
#define PJMEDIA_HAS_VIDEO                0
#define PJMEDIA_AUDIO_DEV_HAS_NULL_AUDIO 1
