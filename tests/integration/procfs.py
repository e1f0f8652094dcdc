"""What /proc says about the daemon: memory and open descriptors. Plain
Python (no pytest), shared by the integration tests and the kTLS guest tests."""
import os
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_nfds(pid):
    """The fd count once it stops moving: closes go through the ring and land
    just after the access line is written."""
    prev = nfds(pid)
    for _ in range(50):
        time.sleep(0.2)
        cur = nfds(pid)
        if cur == prev:
            return cur
        prev = cur
    return prev
