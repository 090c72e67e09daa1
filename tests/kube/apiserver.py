#!/usr/bin/env python3
"""A Kubernetes API server for hermit's tests (Python standard library only).

It serves, over TLS, real-format objects (Pod, PodList with labelSelector and
fieldSelector, Deployment, ReplicaSet, Secret, Node, Namespace, Status errors) built from
a small scenario file, authenticates bearer tokens and client certificates (CN = user),
authorizes each request against per-user RBAC rules (403 with the apiserver's Status
message), and serves the WebSocket port-forward (v4.channel.k8s.io) by connecting to a
real address: the scenario maps each agent pod to a real trace-agent's TCP listener.
tests/kube/README.md says how the scenario's pods map to local trace-pod pods.

usage: apiserver.py --scenario FILE --cert C --key K --client-ca CA --port-file F [--log F]
The scenario file is re-read when it changes (tests flip a pod to not ready that way).
"""
import argparse
import base64
import collections
import hashlib
import http.server
import json
import os
import select
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CREATED = "2026-12-01T10:00:00Z"


class Scenario:
    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.lock = threading.Lock()
        self.data = {}

    def get(self):
        with self.lock:
            m = os.stat(self.path).st_mtime_ns
            if m != self.mtime:
                with open(self.path) as f:
                    self.data = json.load(f)
                self.mtime = m
            return self.data


def meta(kind_ns, name, labels=None, uid=None, **extra):
    m = {"name": name, "uid": uid or "uid-" + name, "resourceVersion": "1",
         "creationTimestamp": extra.pop("created", CREATED)}
    if kind_ns:
        m["namespace"] = kind_ns
    if labels:
        m["labels"] = dict(labels)
    m.update(extra)
    return m


def pod_object(p):
    ns, name = p["namespace"], p["name"]
    phase = p.get("phase", "Running")
    containers = p.get("containers", [{"name": "app", "id": "", "ready": True}])
    statuses = []
    for c in containers:
        ready = bool(c.get("ready", True)) and phase == "Running"
        st = {"name": c["name"], "ready": ready, "restartCount": c.get("restarts", 0),
              "image": c.get("image", "registry.example/" + c["name"] + ":1"),
              "imageID": "", "started": ready,
              "containerID": c.get("id", "")}
        if phase == "Running" and c.get("waiting") is None:
            st["state"] = {"running": {"startedAt": p.get("started", CREATED)}}
        else:
            st["state"] = {"waiting": {"reason": c.get("waiting") or "ContainerCreating"}}
        statuses.append(st)
    all_ready = phase == "Running" and all(s["ready"] for s in statuses)
    cond_time = p.get("readySince", CREATED)
    obj = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta(ns, name, p.get("labels"), annotations=p.get("annotations", {})),
        "spec": {"nodeName": p.get("node", ""), "containers": [
            {"name": c["name"], "image": c.get("image", "registry.example/" + c["name"] + ":1")}
            for c in containers], "restartPolicy": "Always"},
        "status": {"phase": phase, "podIP": p.get("ip", ""),
                   "podIPs": [{"ip": p["ip"]}] if p.get("ip") else [],
                   "hostIP": "192.0.2.1", "startTime": CREATED,
                   "conditions": [
                       {"type": "Initialized", "status": "True", "lastTransitionTime": CREATED},
                       {"type": "Ready", "status": "True" if all_ready else "False",
                        "lastTransitionTime": cond_time},
                       {"type": "ContainersReady", "status": "True" if all_ready else "False",
                        "lastTransitionTime": cond_time},
                       {"type": "PodScheduled", "status": "True", "lastTransitionTime": CREATED}],
                   "containerStatuses": statuses}}
    if p.get("replicaset"):
        obj["metadata"]["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": p["replicaset"],
            "uid": "uid-" + p["replicaset"], "controller": True, "blockOwnerDeletion": True}]
    if p.get("created"):
        obj["metadata"]["creationTimestamp"] = p["created"]
    return obj


def objects(sc, resource):
    """every object of a resource, as (namespace or None, object)"""
    out = []
    if resource == "pods":
        out = [(p["namespace"], pod_object(p)) for p in sc.get("pods", [])]
    elif resource == "secrets":
        for s in sc.get("secrets", []):
            data = {k: base64.b64encode(v.encode()).decode() for k, v in s["data"].items()}
            out.append((s["namespace"], {"apiVersion": "v1", "kind": "Secret",
                                         "metadata": meta(s["namespace"], s["name"]),
                                         "type": "Opaque", "data": data}))
    elif resource == "nodes":
        for n in sc.get("nodes", []):
            out.append((None, {"apiVersion": "v1", "kind": "Node",
                               "metadata": meta(None, n, {"kubernetes.io/hostname": n}),
                               "spec": {}, "status": {"conditions": [
                                   {"type": "Ready", "status": "True"}],
                                   "nodeInfo": {"containerRuntimeVersion": "containerd://1.6.20",
                                                "kubeletVersion": "v1.32.0"}}}))
    elif resource == "namespaces":
        names = sorted({p["namespace"] for p in sc.get("pods", [])} | {"default"})
        out = [(None, {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(None, n),
                       "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
               for n in names]
    elif resource == "deployments":
        for d in sc.get("deployments", []):
            sel = {"matchLabels": d["matchLabels"]}
            out.append((d["namespace"], {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": meta(d["namespace"], d["name"], d["matchLabels"]),
                "spec": {"replicas": d.get("replicas", 1), "selector": sel,
                         "template": {"metadata": {"labels": d["matchLabels"]},
                                      "spec": {"containers": [{"name": "app", "image": "x"}]}}},
                "status": {"replicas": d.get("replicas", 1)}}))
    elif resource == "replicasets":
        for r in sc.get("replicasets", []):
            out.append((r["namespace"], {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": meta(r["namespace"], r["name"], r["matchLabels"], ownerReferences=[{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": r["deployment"],
                    "uid": "uid-" + r["deployment"], "controller": True}]),
                "spec": {"replicas": 1, "selector": {"matchLabels": r["matchLabels"]}},
                "status": {"replicas": 1}}))
    return out


KINDS = {"pods": ("Pod", "v1", True), "secrets": ("Secret", "v1", True),
         "nodes": ("Node", "v1", False), "namespaces": ("Namespace", "v1", False),
         "deployments": ("Deployment", "apps/v1", True),
         "replicasets": ("ReplicaSet", "apps/v1", True)}


def label_match(labels, selector):
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


FIELDS = {"metadata.name": lambda o: o["metadata"]["name"],
          "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
          "spec.nodeName": lambda o: o.get("spec", {}).get("nodeName", ""),
          "status.phase": lambda o: o.get("status", {}).get("phase", "")}


def field_match(obj, selector):
    for term in filter(None, (t.strip() for t in selector.split(","))):
        neg = "!=" in term
        k, v = term.replace("==", "=").split("!=" if neg else "=", 1)
        if k not in FIELDS:
            raise ValueError('field label not supported: ' + k)
        if (FIELDS[k](obj) == v) == neg:
            return False
    return True


def status(code, reason, message, details=None):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details:
        s["details"] = details
    return s


def allowed(sc, user, verb, resource, ns):
    for rule in sc.get("rbac", {}).get(user, []):
        if (verb in rule["verbs"] or "*" in rule["verbs"]) and \
           (resource in rule["resources"] or "*" in rule["resources"]) and \
           ("*" in rule.get("namespaces", ["*"]) or (ns or "") in rule.get("namespaces", [])):
            return True
    return False


def discovery(path):
    res = lambda name, kind, ns, verbs: {"name": name, "singularName": kind.lower(),
                                         "namespaced": ns, "kind": kind, "verbs": verbs,
                                         "shortNames": []}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
            "name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}
    if path == "/api/v1":
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            res("pods", "Pod", True, ["get", "list"]),
            {"name": "pods/portforward", "singularName": "", "namespaced": True,
             "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
            res("secrets", "Secret", True, ["get", "list"]),
            res("nodes", "Node", False, ["get", "list"]),
            res("namespaces", "Namespace", False, ["get", "list"])]}
    if path == "/apis/apps/v1":
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                "resources": [res("deployments", "Deployment", True, ["get", "list"]),
                              res("replicasets", "ReplicaSet", True, ["get", "list"])]}
    if path == "/version":
        return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-hermit-test",
                "platform": "linux/amd64"}
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hermit-test-apiserver"

    def log_message(self, fmt, *args):
        if self.server.logf:
            self.server.logf.write("%s %s\n" % (getattr(self, "user", "-"), fmt % args))
            self.server.logf.flush()

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authenticate(self, sc):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return sc.get("tokens", {}).get(auth[7:].strip())
        cert = self.connection.getpeercert()
        if cert:
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        return v
        return None

    def setup(self):
        super().setup()
        # small writes in a row (101 answer, port frames, data): Nagle against the
        # client's delayed ACK would add 40 ms to each
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        sc = self.server.scenario.get()
        self.user = self.authenticate(sc)
        if not self.user:
            return self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        path = url.path.rstrip("/")
        # an API server behind a proxy that serves it below a path (Rancher's
        # /k8s/clusters/ID): the scenario's "prefix"
        prefix = sc.get("prefix", "")
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix):]
        d = discovery(path)
        if d is not None:
            return self.send_json(200, d)
        parts = path.split("/")[1:]
        if parts[:2] == ["api", "v1"]:
            parts = parts[2:]
        elif parts[:3] == ["apis", "apps", "v1"]:
            parts = parts[3:]
        else:
            return self.send_json(404, status(404, "NotFound", "the server could not find "
                                              "the requested resource"))
        ns = None
        if len(parts) >= 2 and parts[0] == "namespaces" and len(parts) != 2:
            ns, parts = parts[1], parts[2:]
        if not parts or parts[0] not in KINDS:
            return self.send_json(404, status(404, "NotFound", "the server could not find "
                                              "the requested resource"))
        resource, name, sub = parts[0], parts[1] if len(parts) > 1 else None, \
            parts[2] if len(parts) > 2 else None
        kind, api_version, namespaced = KINDS[resource]
        if sub == "portforward":
            return self.portforward(sc, ns, name, q)
        if sub:
            return self.send_json(404, status(404, "NotFound", "no subresource " + sub))
        verb = "get" if name else "list"
        if not allowed(sc, self.user, verb, resource, ns if namespaced else None):
            who = 'User "%s" cannot %s resource "%s" in API group "%s"' % (
                self.user, verb, resource, "apps" if api_version == "apps/v1" else "")
            where = ' in the namespace "%s"' % ns if ns else " at the cluster scope"
            msg = '%s%s is forbidden: %s%s' % (resource, ' "%s"' % name if name else "", who, where)
            return self.send_json(403, status(403, "Forbidden", msg, {"name": name or "",
                                                                    "kind": resource}))
        objs = [o for (ons, o) in objects(sc, resource) if ns is None or ons == ns]
        if name:
            for o in objs:
                if o["metadata"]["name"] == name:
                    return self.send_json(200, o)
            return self.send_json(404, status(404, "NotFound", '%s "%s" not found' % (resource, name),
                                              {"name": name, "kind": resource}))
        try:
            sel, fsel = q.get("labelSelector", [""])[0], q.get("fieldSelector", [""])[0]
            objs = [o for o in objs if label_match(o["metadata"].get("labels", {}), sel)
                    and field_match(o, fsel)]
        except ValueError as e:
            return self.send_json(400, status(400, "BadRequest", str(e)))
        return self.send_json(200, {"kind": kind + "List", "apiVersion": api_version,
                                    "metadata": {"resourceVersion": "1"}, "items": objs})

    # ---- WebSocket port-forward ----
    def portforward(self, sc, ns, name, q):
        if not allowed(sc, self.user, "create", "pods/portforward", ns):
            msg = ('pods "%s" is forbidden: User "%s" cannot create resource "pods/portforward" '
                   'in API group "" in the namespace "%s"' % (name, self.user, ns))
            return self.send_json(403, status(403, "Forbidden", msg, {"name": name, "kind": "pods"}))
        pods = [o for (ons, o) in objects(sc, "pods") if ons == ns and o["metadata"]["name"] == name]
        if not pods:
            return self.send_json(404, status(404, "NotFound", 'pods "%s" not found' % name,
                                              {"name": name, "kind": "pods"}))
        if pods[0]["status"]["phase"] != "Running":
            return self.send_json(400, status(400, "BadRequest",
                                              "pod %s is not running" % name))
        ports = q.get("ports", [])
        if len(ports) != 1 or not ports[0].isdigit():
            return self.send_json(400, status(400, "BadRequest", "one port in ?ports= please"))
        port = int(ports[0])
        protos = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if self.headers.get("Upgrade", "").lower() != "websocket" or "v4.channel.k8s.io" not in protos:
            return self.send_json(400, status(400, "BadRequest",
                                              "port-forward needs a WebSocket upgrade with "
                                              "v4.channel.k8s.io"))
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.server.stats["portforwards"] += 1
        dest = sc.get("forward", {}).get("%s/%s" % (ns, name), {}).get(str(port))
        ph = struct.pack("<H", port)
        first = frame(2, b"\x00" + ph) + frame(2, b"\x01" + ph)
        target = None
        try:
            if not dest:
                raise OSError("no forward for port %d in the test scenario" % port)
            if dest.startswith("unix:"):
                target = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target.connect(dest[5:])
            else:
                h, p = dest.rsplit(":", 1)
                target = socket.create_connection((h, int(p)), timeout=5)
        except OSError as e:
            msg = "error forwarding port %d to pod %s, uid : %s" % (port, name, e)
            for f in (first[:5], first[5:], frame(2, b"\x01" + msg.encode()), frame(8, b"\x03\xe8")):
                self.connection.sendall(f)
            return
        if target.family != socket.AF_UNIX:
            target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for f in (first[:5], first[5:]):  # a TLS record per frame: see pump()
            self.connection.sendall(f)
        pump(self.connection, target)


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        h = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        h = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        h = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return h + payload


def unmask(data, mask):
    """XOR with the repeated 4-byte mask, as one big integer (per byte is far too slow)"""
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def parse_frames(buf):
    """(frames, rest): complete client frames (masked) at the start of buf"""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, pos = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, pos = struct.unpack("!Q", buf[2:10])[0], 10
        if not b1 & 0x80:
            raise ValueError("client frame not masked")
        if len(buf) < pos + 4 + n:
            break
        data = unmask(bytes(buf[pos + 4:pos + 4 + n]), bytes(buf[pos:pos + 4]))
        out.append((b0 & 0x80 != 0, b0 & 0x0F, data))
        buf = buf[pos + 4 + n:]
    return out, buf


class Frames:
    """frames for the client, each written by its own send() calls so that no TLS record
    holds the end of one frame and the start of the next, as a Go API server writes them:
    python3-kubernetes' port-forward reads one frame per select() on the raw socket, so
    a second frame left decrypted in OpenSSL's buffer would wait unseen (it hung)"""
    def __init__(self):
        self.q = collections.deque()
        self.n = 0
    def __iadd__(self, f):
        self.q.append(bytearray(f))
        self.n += len(f)
        return self
    def __len__(self):
        return self.n
    def send(self, conn):
        sent = conn.send(self.q[0])
        del self.q[0][:sent]
        self.n -= sent
        if not self.q[0]:
            self.q.popleft()


def pump(conn, target):
    """one non-blocking loop: TLS from the client <-> the target socket (clients send
    nothing before the 101, so rfile has buffered no frame)"""
    inbuf = bytearray()
    to_client, to_target = Frames(), bytearray()
    conn.setblocking(False)
    target.setblocking(False)
    client_open, target_open = True, True
    msg_channel = None
    LIMIT = 1 << 20
    while client_open or to_client:
        frames, rest = parse_frames(bytes(inbuf))
        inbuf = bytearray(rest)
        for fin, op, data in frames:
            if op == 8:
                to_client += frame(8, data[:2])
                client_open = False
            elif op == 9:
                to_client += frame(10, data)
            elif op in (1, 2, 0):
                if op != 0:
                    msg_channel = data[0] if data else None
                    data = data[1:]
                if msg_channel == 0 and target_open:
                    to_target += data
        if not target_open and not to_target and client_open and not to_client:
            to_client += frame(8, b"\x03\xe8")
            client_open = False
        rl, wl = [], []
        if client_open and len(to_target) < LIMIT:
            rl.append(conn)
        if target_open and len(to_client) < LIMIT:
            rl.append(target)
        if to_client:
            wl.append(conn)
        if to_target and target_open:
            wl.append(target)
        if not rl and not wl:
            break
        ready_now = conn in rl and conn.pending()
        r, w, _ = select.select(rl, wl, [], 0 if ready_now else 30)
        if ready_now and conn not in r:
            r.append(conn)
        if not r and not w and not ready_now:
            continue
        try:
            if conn in r:
                while True:
                    try:
                        d = conn.recv(65536)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        break
                    if not d:
                        client_open = False
                        break
                    inbuf += d
                    if not conn.pending():
                        break
            if target in r:
                try:
                    d = target.recv(65536)
                    if d:
                        to_client += frame(2, b"\x00" + d)
                    else:
                        target_open = False
                except BlockingIOError:
                    pass
            if conn in w and to_client:
                try:
                    to_client.send(conn)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            if target in w and to_target:
                try:
                    n = target.send(to_target)
                    del to_target[:n]
                except BlockingIOError:
                    pass
        except (OSError, ssl.SSLError):
            break
        if not client_open and not to_client:
            break
    target.close()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-ca", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    a = ap.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.scenario = Scenario(a.scenario)
    srv.scenario.get()
    srv.logf = open(a.log, "a") if a.log else None
    srv.stats = {"portforwards": 0}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.load_verify_locations(a.client_ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    # the handshake happens in the request's thread, at its first read
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
