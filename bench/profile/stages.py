#!/usr/bin/env python3
"""Folds `perf script -F comm,tid,ip,sym` output (recorded with `perf record -g`) into the
stages of a request and prints a Markdown table.

    perf script -i broker.data -F comm,tid,ip,sym | stages.py --name broker [--us-per-msg 41.3]

Each sample is charged to one stage. Kernel samples are classified by their kernel call
chain (kernel stacks are always complete); user-space samples by their innermost frame only
(release builds keep no frame pointers, so their callers are not trusted). With
`--us-per-msg` (the CPU time the process spent per message, printed by `rocketlog bench
--broker-pid`), each stage's share is also given in microseconds per message.
"""

import argparse
import re
import sys
from collections import Counter

# Kernel frames, searched from the innermost outwards: the first rule that matches any frame
# names the stage.
KERNEL = [
    ("page faults and zeroing", r"clear_page|do_anonymous_page|handle_mm_fault|exc_page_fault|do_fault\b|filemap_fault"),
    ("socket write (incl. loopback delivery)", r"tcp_sendmsg|sock_write_iter|__sys_sendto|do_writev|sock_sendmsg|__sys_sendmsg"),
    ("socket read", r"tcp_recvmsg|sock_recvmsg|sock_read_iter|__sys_recvfrom|__sys_recvmsg"),
    ("futex (wake-ups, parking)", r"futex"),
    ("epoll", r"ep_poll|do_epoll|epoll_wait|ep_send_events"),
    ("file writes and fsync", r"vfs_fsync|do_fsync|ext4_|xfs_|jbd2|iomap_|file_write_iter|filemap_"),
    ("madvise / munmap", r"madvise|munmap|zap_pte"),
    ("scheduler", r"__schedule|finish_task_switch|schedule\b|pick_next_task|try_to_wake_up"),
    ("interrupts, timers", r"irq|softirq|hrtimer|apic_timer"),
]

# User-space innermost frames, first match wins.
USER = [
    ("HPACK (HTTP/2 headers)", r"^h2::hpack|^<h2::hpack"),
    ("HTTP/2 framing (h2, hyper)", r"^<?h2::|^<?hyper::|^<?hyper_util::|^<?http::|^<?httparse"),
    ("tonic / tower", r"^<?tonic::|^<?tower::|^<?tower_"),
    ("protobuf encode", r"(prost|rocketlog_proto).*(encode|encoded_len)|encode_varint|encoded_len_varint"),
    ("protobuf decode", r"(prost|rocketlog_proto).*(decode|merge)|decode_varint|merge_loop|skip_field"),
    ("allocation", r"malloc|^free$|realloc|calloc|_rjem|jemalloc|sdallocx|^je_|alloc::alloc|raw_vec|__rust_(alloc|dealloc|realloc)"),
    ("memcpy / memset", r"memcpy|memmove|memset|memcmp"),
    ("checksums (CRC32C)", r"crc32c"),
    ("body digest (MD5 of delivered bodies)", r"md5|md_5"),
    ("store: dispatcher, consume queues, index", r"rocketlog_store::(dispatch|consume_queue|index|cq)"),
    ("store: durability (flush, group commit)", r"rocketlog_store::.*(flush|durab|commit_wait|sync)"),
    ("store: append and reads", r"rocketlog_store::"),
    ("broker: validation", r"rocketlog_broker::service::validate"),
    ("broker: consumption engine", r"rocketlog_broker::consumption"),
    ("broker: request handling", r"rocketlog_broker::"),
    ("SDK logic", r"rocketlog_client::"),
    ("ids, common", r"rocketlog_common::|rocketlog_transport::"),
    ("tokio (scheduling, channels, timers)", r"^<?tokio::|^<?tokio_util::|^<?tokio_stream::|parking_lot|crossbeam|^<?futures_"),
    ("TLS, request signatures", r"rustls|ring::|aws_lc|sha1|hmac"),
    ("libc (other)", r"^__|^_IO|^pthread|^syscall$|^epoll_wait$|^recv|^send|^write|^read"),
    ("std / core (other)", r"^<?(std|core|alloc)::"),
]

KERNEL_RULES = [(name, re.compile(rx)) for name, rx in KERNEL]
USER_RULES = [(name, re.compile(rx)) for name, rx in USER]


def is_kernel(ip: str) -> bool:
    return ip.lower().startswith("ffff")


def classify(frames):
    """frames: [(ip, sym)] innermost first."""
    if not frames:
        return "unknown"
    kernel = [sym for ip, sym in frames if is_kernel(ip)]
    if kernel and is_kernel(frames[0][0]):
        for name, rx in KERNEL_RULES:
            if any(rx.search(sym) for sym in kernel):
                return "kernel: " + name
        return "kernel: other"
    sym = frames[0][1]
    if sym.startswith("[unknown]"):
        return "unresolved"
    for name, rx in USER_RULES:
        if rx.search(sym):
            return name
    return "other user space"


def samples(lines):
    """Yields the frame list of each sample; handles output with and without call chains."""
    frames = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if frames is not None:
                yield frames
                frames = None
            continue
        if line[0] in " \t":
            parts = line.strip().split(None, 1)
            if frames is not None and parts:
                frames.append((parts[0], parts[1] if len(parts) > 1 else "[unknown]"))
            continue
        # A header: `comm tid [ip sym]` (comm may hold spaces; tid is the first number).
        if frames is not None:
            yield frames
        m = re.match(r"^(.*?)\s+(\d+)\s*(?:([0-9a-fA-F]+)\s+(.*))?$", line)
        frames = []
        if m and m.group(3):
            frames.append((m.group(3), m.group(4)))
    if frames is not None:
        yield frames


def strip_offset(sym: str) -> str:
    return re.sub(r"\+0x[0-9a-f]+$", "", sym).strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="process")
    ap.add_argument("--us-per-msg", type=float)
    ap.add_argument("--top", type=int, default=0, help="also list the N hottest symbols")
    args = ap.parse_args()
    stages, symbols = Counter(), Counter()
    total = 0
    for frames in samples(sys.stdin):
        frames = [(ip, strip_offset(sym)) for ip, sym in frames]
        total += 1
        stages[classify(frames)] += 1
        if frames:
            symbols[frames[0][1]] += 1
    if total == 0:
        print(f"{args.name}: no samples", file=sys.stderr)
        sys.exit(1)
    us = args.us_per_msg
    head = f"| {args.name}: stage ({total} samples) | share |" + (" µs per message |" if us else "")
    print(head)
    print("|---|---|" + ("---|" if us else ""))
    for name, n in stages.most_common():
        row = f"| {name} | {100 * n / total:.1f} % |"
        if us:
            row += f" {us * n / total:.1f} |"
        print(row)
    if us:
        print(f"| total | 100 % | {us:.1f} |")
    if args.top:
        print()
        print(f"| {args.name}: hottest symbols | share |")
        print("|---|---|")
        for sym, n in symbols.most_common(args.top):
            print(f"| `{sym[:110]}` | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main()
