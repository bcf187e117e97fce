/* Thin C shim over libfabric's static-inline fi_* calls, so Rust can call them by symbol.
 * Every function returns libfabric's own return value (0 or a negative FI_E* code) unchanged;
 * none keeps state. The hints follow Mercury's ofi plugin on the same provider (docs/na.md). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_tagged.h>

/* The API version requested: fixed, so a newer libfabric (2.x) keeps these semantics. */
#define NA_OFI_VERSION FI_VERSION(1, 17)

/* A CQ error entry flattened to fields whose layout we own. */
struct na_ofi_cq_err {
    void *op_context;
    uint64_t flags;
    size_t len;
    uint64_t data;
    uint64_t tag;
    size_t olen;
    int32_t err;
    int32_t prov_errno;
};

uint32_t na_ofi_api_version(void) { return NA_OFI_VERSION; }
uint32_t na_ofi_lib_version(void) { return fi_version(); }
const char *na_ofi_strerror(int err) { return fi_strerror(err); }

/* fi_getinfo for an RDM endpoint of provider `prov` with Mercury's caps and hints. `node` and
 * `service` name the local address (FI_SOURCE) when given. The first IPv4 answer is duplicated
 * into *out (a single fi_info the caller frees with na_ofi_freeinfo). */
int na_ofi_getinfo(const char *prov, const char *node, const char *service, uint64_t mr_mode,
                   int serialized, size_t inject_size, struct fi_info **out)
{
    struct fi_info *hints, *list = NULL, *cur;
    int rc;

    *out = NULL;
    hints = fi_allocinfo();
    if (!hints)
        return -FI_ENOMEM;
    hints->caps = FI_MSG | FI_TAGGED | FI_RMA | FI_DIRECTED_RECV;
    /* Not FI_ASYNC_IOV: writes pass their one-entry iov arrays from the stack (fi_writemsg). */
    hints->mode = FI_CONTEXT;
    hints->addr_format = FI_SOCKADDR_IN;
    hints->ep_attr->type = FI_EP_RDM;
    /* rxm's layering ("tcp;ofi_rxm", "verbs;ofi_rxm") speaks FI_PROTO_RXM; any other name here is
     * XNET, libfabric's native RDM over TCP ("net" in 1.17, "tcp" from 1.18), as Mercury's table
     * has it. */
    hints->ep_attr->protocol = strstr(prov, ";ofi_rxm") ? FI_PROTO_RXM : FI_PROTO_XNET;
    /* Serialized: the Rust side holds one lock around every call on the domain (sys/ofi.rs,
     * Fabric::serial). Otherwise the provider locks. */
    hints->domain_attr->threading = serialized ? FI_THREAD_DOMAIN : FI_THREAD_SAFE;
    hints->domain_attr->control_progress = FI_PROGRESS_MANUAL;
    hints->domain_attr->data_progress = FI_PROGRESS_MANUAL;
    hints->domain_attr->av_type = FI_AV_MAP;
    hints->domain_attr->mr_mode = (int) mr_mode;
    hints->domain_attr->cq_data_size = 4;
    hints->tx_attr->op_flags = 0;
    /* 0 keeps the provider's own inject size (64 bytes on tcp;ofi_rxm 1.17); rxm accepts up to
     * its bounce-buffer size, copying larger injected messages into a buffer of its own. */
    hints->tx_attr->inject_size = inject_size;
    hints->fabric_attr->prov_name = strdup(prov);
    if (!hints->fabric_attr->prov_name) {
        fi_freeinfo(hints);
        return -FI_ENOMEM;
    }
    rc = fi_getinfo(NA_OFI_VERSION, node, service, node ? FI_SOURCE : 0, hints, &list);
    fi_freeinfo(hints);
    if (rc != 0)
        return rc;
    for (cur = list; cur; cur = cur->next) {
        if (cur->addr_format == FI_SOCKADDR_IN && cur->src_addr &&
            cur->src_addrlen == sizeof(struct sockaddr_in))
            break;
    }
    if (!cur) {
        fi_freeinfo(list);
        return -FI_ENODATA;
    }
    *out = fi_dupinfo(cur);
    fi_freeinfo(list);
    return *out ? 0 : -FI_ENOMEM;
}

void na_ofi_freeinfo(struct fi_info *info) { fi_freeinfo(info); }
const char *na_ofi_info_prov_name(const struct fi_info *i) { return i->fabric_attr->prov_name; }
const char *na_ofi_info_domain_name(const struct fi_info *i) { return i->domain_attr->name; }
uint64_t na_ofi_info_mr_mode(const struct fi_info *i) { return (uint64_t) i->domain_attr->mr_mode; }
uint64_t na_ofi_info_caps(const struct fi_info *i) { return i->caps; }
size_t na_ofi_info_cq_data_size(const struct fi_info *i) { return i->domain_attr->cq_data_size; }
size_t na_ofi_info_max_msg_size(const struct fi_info *i) { return i->ep_attr->max_msg_size; }
size_t na_ofi_info_inject_size(const struct fi_info *i) { return i->tx_attr->inject_size; }
size_t na_ofi_info_mr_key_size(const struct fi_info *i) { return i->domain_attr->mr_key_size; }

/* Copies the info's 16-byte sockaddr_in source address. */
int na_ofi_info_src_addr(const struct fi_info *i, void *out16)
{
    if (!i->src_addr || i->src_addrlen != sizeof(struct sockaddr_in))
        return -FI_EINVAL;
    memcpy(out16, i->src_addr, sizeof(struct sockaddr_in));
    return 0;
}

int na_ofi_fabric_domain(struct fi_info *info, struct fid_fabric **fabric,
                         struct fid_domain **domain)
{
    int rc = fi_fabric(info->fabric_attr, fabric, NULL);
    if (rc != 0)
        return rc;
    rc = fi_domain(*fabric, info, domain, NULL);
    if (rc != 0) {
        fi_close(&(*fabric)->fid);
        *fabric = NULL;
    }
    return rc;
}

/* Closes any fid (fabric, domain, endpoint, CQ, AV, MR: each starts with its struct fid). */
int na_ofi_close(void *fid) { return fid ? fi_close((struct fid *) fid) : 0; }

/* Opens one endpoint on `port` (0: ephemeral) of the info's source address, with its own CQ
 * (tagged format, FI_WAIT_FD when `want_fd`) and AV (map). *wait_fd is -1 without a wait fd. */
int na_ofi_ep_open(struct fid_domain *domain, const struct fi_info *info, uint16_t port,
                   int want_fd, struct fid_ep **ep, struct fid_cq **cq, struct fid_av **av,
                   int *wait_fd)
{
    struct fi_info *dup;
    struct fi_cq_attr cq_attr;
    struct fi_av_attr av_attr;
    int rc;

    *ep = NULL;
    *cq = NULL;
    *av = NULL;
    *wait_fd = -1;
    dup = fi_dupinfo(info);
    if (!dup)
        return -FI_ENOMEM;
    if (dup->src_addr && dup->src_addrlen == sizeof(struct sockaddr_in))
        ((struct sockaddr_in *) dup->src_addr)->sin_port = htons(port);

    memset(&cq_attr, 0, sizeof(cq_attr));
    cq_attr.format = FI_CQ_FORMAT_TAGGED;
    cq_attr.wait_obj = want_fd ? FI_WAIT_FD : FI_WAIT_NONE;
    rc = fi_cq_open(domain, &cq_attr, cq, NULL);
    if (rc != 0 && want_fd) {
        cq_attr.wait_obj = FI_WAIT_NONE;
        rc = fi_cq_open(domain, &cq_attr, cq, NULL);
    }
    if (rc != 0)
        goto fail;
    if (cq_attr.wait_obj == FI_WAIT_FD) {
        int fd = -1;
        if (fi_control(&(*cq)->fid, FI_GETWAIT, &fd) == 0)
            *wait_fd = fd;
    }

    memset(&av_attr, 0, sizeof(av_attr));
    av_attr.type = FI_AV_MAP;
    rc = fi_av_open(domain, &av_attr, av, NULL);
    if (rc != 0)
        goto fail;

    rc = fi_endpoint(domain, dup, ep, NULL);
    if (rc != 0)
        goto fail;
    rc = fi_ep_bind(*ep, &(*cq)->fid, FI_TRANSMIT | FI_RECV);
    if (rc != 0)
        goto fail;
    rc = fi_ep_bind(*ep, &(*av)->fid, 0);
    if (rc != 0)
        goto fail;
    rc = fi_enable(*ep);
    if (rc != 0)
        goto fail;
    fi_freeinfo(dup);
    return 0;

fail:
    if (*ep)
        fi_close(&(*ep)->fid);
    if (*av)
        fi_close(&(*av)->fid);
    if (*cq)
        fi_close(&(*cq)->fid);
    *ep = NULL;
    *av = NULL;
    *cq = NULL;
    *wait_fd = -1;
    fi_freeinfo(dup);
    return rc;
}

int na_ofi_getname(struct fid_ep *ep, void *out16)
{
    size_t len = sizeof(struct sockaddr_in);
    int rc = fi_getname(&ep->fid, out16, &len);
    if (rc == 0 && len != sizeof(struct sockaddr_in))
        return -FI_EINVAL;
    return rc;
}

/* Inserts one 16-byte sockaddr_in; returns 0 and its fi_addr_t, or a negative FI_E* code. */
int na_ofi_av_insert(struct fid_av *av, const void *addr16, uint64_t *fi_addr)
{
    fi_addr_t out = FI_ADDR_NOTAVAIL;
    int rc = fi_av_insert(av, addr16, 1, &out, 0, NULL);
    if (rc < 0)
        return rc;
    if (rc != 1 || out == FI_ADDR_NOTAVAIL)
        return -FI_EADDRNOTAVAIL;
    *fi_addr = out;
    return 0;
}

int na_ofi_av_remove(struct fid_av *av, uint64_t fi_addr)
{
    fi_addr_t a = fi_addr;
    return fi_av_remove(av, &a, 1, 0);
}

ssize_t na_ofi_senddata(struct fid_ep *ep, const void *buf, size_t len, uint64_t data,
                        uint64_t dest, void *ctx)
{
    return fi_senddata(ep, buf, len, NULL, data, dest, ctx);
}

/* Injected sends: libfabric copies the message before returning and reports no completion. */
ssize_t na_ofi_injectdata(struct fid_ep *ep, const void *buf, size_t len, uint64_t data,
                          uint64_t dest)
{
    return fi_injectdata(ep, buf, len, data, dest);
}

ssize_t na_ofi_tinject(struct fid_ep *ep, const void *buf, size_t len, uint64_t dest, uint64_t tag)
{
    return fi_tinject(ep, buf, len, dest, tag);
}

ssize_t na_ofi_recv(struct fid_ep *ep, void *buf, size_t len, void *ctx)
{
    return fi_recv(ep, buf, len, NULL, FI_ADDR_UNSPEC, ctx);
}

ssize_t na_ofi_tsend(struct fid_ep *ep, const void *buf, size_t len, uint64_t dest, uint64_t tag,
                     void *ctx)
{
    return fi_tsend(ep, buf, len, NULL, dest, tag, ctx);
}

ssize_t na_ofi_trecv(struct fid_ep *ep, void *buf, size_t len, uint64_t src, uint64_t tag,
                     void *ctx)
{
    return fi_trecv(ep, buf, len, NULL, src, tag, 0, ctx);
}

/* Drops the unexpected tagged message from src with tag, if the provider holds one: its
 * completion is a success (dropped) or the error FI_ENOMSG (none). No buffer, nothing posted. */
ssize_t na_ofi_tpeek_discard(struct fid_ep *ep, uint64_t src, uint64_t tag, void *ctx)
{
    struct fi_msg_tagged msg;

    memset(&msg, 0, sizeof msg);
    msg.addr = src;
    msg.tag = tag;
    msg.context = ctx;
    return fi_trecvmsg(ep, &msg, FI_PEEK | FI_DISCARD);
}

/* Reports the tagged message that heads src's connection, whatever its tag, without taking it:
 * the completion is a success whose tag is that message's, or the error FI_ENOMSG (none
 * waiting). For providers that hold a connection's later messages behind one no receive takes
 * (XNET). No buffer, nothing posted. */
ssize_t na_ofi_tpeek_head(struct fid_ep *ep, uint64_t src, void *ctx)
{
    struct fi_msg_tagged msg;

    memset(&msg, 0, sizeof msg);
    msg.addr = src;
    msg.tag = 0;
    msg.ignore = ~(uint64_t) 0;
    msg.context = ctx;
    return fi_trecvmsg(ep, &msg, FI_PEEK);
}

ssize_t na_ofi_read(struct fid_ep *ep, void *buf, size_t len, void *desc, uint64_t src,
                    uint64_t addr, uint64_t key, void *ctx)
{
    return fi_read(ep, buf, len, desc, src, addr, key, ctx);
}

/* A put completes only once the target has placed the data (FI_DELIVERY_COMPLETE), so a write
 * against a key the target no longer has is an error completion here, not a silent success. */
ssize_t na_ofi_write(struct fid_ep *ep, const void *buf, size_t len, void *desc, uint64_t dest,
                     uint64_t addr, uint64_t key, void *ctx)
{
    struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
    struct fi_rma_iov rma_iov = { .addr = addr, .len = len, .key = key };
    struct fi_msg_rma msg = {
        .msg_iov = &iov,
        .desc = &desc,
        .iov_count = 1,
        .addr = dest,
        .rma_iov = &rma_iov,
        .rma_iov_count = 1,
        .context = ctx,
        .data = 0,
    };
    return fi_writemsg(ep, &msg, FI_COMPLETION | FI_DELIVERY_COMPLETE);
}

ssize_t na_ofi_cq_read(struct fid_cq *cq, struct fi_cq_tagged_entry *buf, size_t count)
{
    return fi_cq_read(cq, buf, count);
}

ssize_t na_ofi_cq_readerr(struct fid_cq *cq, struct na_ofi_cq_err *out)
{
    struct fi_cq_err_entry e;
    ssize_t rc;

    memset(&e, 0, sizeof(e));
    rc = fi_cq_readerr(cq, &e, 0);
    if (rc < 0)
        return rc;
    out->op_context = e.op_context;
    out->flags = e.flags;
    out->len = e.len;
    out->data = e.data;
    out->tag = e.tag;
    out->olen = e.olen;
    out->err = e.err;
    out->prov_errno = e.prov_errno;
    return rc;
}

int na_ofi_cancel(struct fid_ep *ep, void *ctx) { return (int) fi_cancel(&ep->fid, ctx); }

/* fi_trywait on one CQ: 0 when it is safe to block on its fd, -FI_EAGAIN when work is pending. */
int na_ofi_trywait(struct fid_fabric *fabric, struct fid_cq *cq)
{
    struct fid *fids[1] = { &cq->fid };
    return fi_trywait(fabric, fids, 1);
}

/* Registers [buf, buf + len) with `access` (FI_READ | FI_WRITE | FI_REMOTE_*); `requested_key`
 * matters only without FI_MR_PROV_KEY. Returns the key and the local descriptor. */
int na_ofi_mr_reg(struct fid_domain *domain, const void *buf, size_t len, uint64_t access,
                  uint64_t requested_key, struct fid_mr **mr, uint64_t *key, void **desc)
{
    int rc = fi_mr_reg(domain, buf, len, access, 0, requested_key, 0, mr, NULL);
    if (rc != 0) {
        *mr = NULL;
        return rc;
    }
    *key = fi_mr_key(*mr);
    *desc = fi_mr_desc(*mr);
    return 0;
}
