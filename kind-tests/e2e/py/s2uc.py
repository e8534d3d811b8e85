"""SciStream 1.x's clients across two facilities, with grpcio (an implementation of gRPC we
did not write): what `s2uc` (`prod-req`, `inbound-request`, `outbound-request`, `update`,
`release`) and the application controllers (`appctrl`) send, against each facility's control
endpoint (see PROTOCOL.md, "How the 1.x clients actually call").

Usage: s2uc.py STUBS_DIR CONFIG_JSON, where CONFIG_JSON has
  step:           "setup", "release" or "actions"
  producer, consumer: {"addr": "127.0.0.1:PORT", "cert": PEM_FILE} of each control endpoint
  token:          the user's token (metadata `authorization`, bare, as 1.x sends it)
  uid:            the stream's uid (the same on both sides, as in 1.x)
  num_conn, rate: as `s2uc` sends them (rate in kb/s) (step setup)
  prod_listeners: the producer application's endpoints (step setup)
  actions:        (step actions) a list of calls, each {"do": ..., "at": "producer"|"consumer",
                  ...}, run in order; see ACTIONS below

Steps setup and release print one JSON object with the replies and exit non-zero when a call
fails. Step actions prints the list of what each action saw (a failed call is a result with
its gRPC code, not an exit), so scenarios can check refusals.
"""
import json
import os
import sys
import time
import traceback

stubs, config = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, stubs)

import grpc  # noqa: E402
import scistream_pb2 as pb  # noqa: E402
import scistream_pb2_grpc as pbg  # noqa: E402


def stub(endpoint):
    with open(endpoint["cert"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return pbg.ControlStub(grpc.secure_channel(endpoint["addr"], creds))


STUBS = {"producer": stub(config["producer"]), "consumer": stub(config["consumer"])}
prod, cons = STUBS["producer"], STUBS["consumer"]
uid, token = config["uid"], config["token"]
md = [("authorization", token)]
# Bound of every wait (generous: a loaded machine); 1.x's own req waits up to 180 s.
WAIT = 120
# Every call future, kept alive until the script exits. grpcio's _Rendezvous.__del__ takes the
# call's condition lock: a future dropped while still running (a Hello whose req was refused)
# was finalised at a moment its lock was held and the script hung there for good (py-spy:
# `Condition.__enter__ <- _Rendezvous.__del__`), 4 runs in 10 of the introspection scenario.
FUTURES = []


def future(method, msg, m):
    f = method.future(msg, metadata=m)
    FUTURES.append(f)
    return f


def appctrl(control, role, prod_listeners=()):
    """An application controller's hello, as 1.x's appctrl: on any error but UNAUTHENTICATED it
    retries 5 times 0.1 s apart; it is started again (as a site's script would) until the
    stream exists, within WAIT seconds. The credential is the token that created the stream."""
    deadline = time.monotonic() + WAIT
    while True:
        for _ in range(6):
            try:
                r = control.hello(pb.Hello(uid=uid, prod_listeners=list(prod_listeners), role=role), metadata=md)
                return {"message": r.message, "listeners": list(r.listeners)}
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def side(control, role, prod_listeners=()):
    """`req` (blocks until the Hello), the application controller's Hello meanwhile."""
    req = future(control.req, pb.Request(uid=uid, role=role, num_conn=config["num_conn"], rate=config["rate"]), md)
    hello = appctrl(control, role, prod_listeners)
    reply = req.result(timeout=WAIT)
    return {"listeners": list(reply.listeners), "prod_listeners": list(reply.prod_listeners), "hello": hello}


# === actions ===

def failed(e):
    return {"code": e.code().name, "details": e.details()}


def call(f):
    """Runs f(); its result (a dict) with code OK, or the gRPC error."""
    try:
        out = f() or {}
        out["code"] = "OK"
        return out
    except grpc.RpcError as e:
        return failed(e)
    except grpc.FutureTimeoutError:
        return {"code": "CLIENT_TIMEOUT", "details": "no answer within the client's wait"}


def metadata(a):
    return [("authorization", a.get("token", token))]


def inbound(a):
    """s2uc inbound-request: req PROD, 0.5 s later hello PROD on the same channel with the same
    token and the producer application's endpoints, waits for both (1.x: 5 s; here `wait`),
    then update PROD with the req reply's prod_listeners."""
    control, m, u = STUBS[a["at"]], metadata(a), a.get("uid", uid)
    req = future(control.req, pb.Request(uid=u, role="PROD", num_conn=a.get("num_conn", 5), rate=a.get("rate", 10000)),
                 m)
    time.sleep(0.5)
    hello = future(control.hello, pb.Hello(uid=u, prod_listeners=a["prod_listeners"], role="PROD"), m)
    reply = req.result(timeout=a.get("wait", WAIT))
    hello_reply = hello.result(timeout=a.get("wait", WAIT))
    control.update(pb.UpdateTargets(uid=u, remote_listeners=list(reply.prod_listeners), role="PROD"), metadata=m)
    return {"listeners": list(reply.listeners), "prod_listeners": list(reply.prod_listeners),
            "hello": hello_reply.message}


def outbound(a):
    """s2uc outbound-request UID PROD_LISTENERS: req CONS, 0.5 s later hello with role PROD (the
    client's quirk) listing the consumer application's address, waits for the req reply, then
    update CONS with PROD_LISTENERS (the producer facility's listeners)."""
    control, m, u = STUBS[a["at"]], metadata(a), a.get("uid", uid)
    req = future(control.req, pb.Request(uid=u, role="CONS", num_conn=a.get("num_conn", 5), rate=a.get("rate", 10000)),
                 m)
    time.sleep(0.5)
    hello = future(control.hello, pb.Hello(uid=u, prod_listeners=a.get("hello_listeners", []), role="PROD"), m)
    reply = req.result(timeout=a.get("wait", WAIT))
    hello_reply = hello.result(timeout=a.get("wait", WAIT))
    control.update(pb.UpdateTargets(uid=u, remote_listeners=a["remote"], role="CONS"), metadata=m)
    return {"listeners": list(reply.listeners), "hello": hello_reply.message,
            "hello_listeners": list(hello_reply.listeners)}


def app(a):
    """appctrl UID ADDR TOKEN ROLE: hello; on any error but UNAUTHENTICATED retries 5 times
    0.1 s apart, then gives up."""
    control, u = STUBS[a["at"]], a.get("uid", uid)
    msg = pb.Hello(uid=u, prod_listeners=a.get("prod_listeners", []), role=a["role"])
    last = None
    for attempt in range(1, 7):
        try:
            r = control.hello(msg, metadata=[("authorization", a["key"])])
            return {"code": "OK", "attempts": attempt, "message": r.message, "listeners": list(r.listeners)}
        except grpc.RpcError as e:
            last = failed(e)
            last["attempts"] = attempt
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                break
            time.sleep(0.1)
    return last


def release(a):
    """s2uc release UID."""
    STUBS[a["at"]].release(pb.Release(uid=a.get("uid", uid)), metadata=metadata(a))


def update(a):
    """s2uc's update of one side."""
    STUBS[a["at"]].update(pb.UpdateTargets(uid=a.get("uid", uid), remote_listeners=a["remote"], role=a["role"]),
                          metadata=metadata(a))


def reqs(a):
    """`count` reqs (each a new uid) with `token`, as a client with a wrong token repeats them:
    the codes, in order."""
    codes = []
    for i in range(a["count"]):
        u = "%s%012x" % (a["uid_prefix"], i)
        try:
            STUBS[a["at"]].req(pb.Request(uid=u, role="PROD", num_conn=1, rate=10000), metadata=metadata(a),
                               timeout=a.get("wait", 30))
            codes.append("OK")
        except grpc.RpcError as e:
            codes.append(e.code().name)
    return {"codes": codes}


ACTIONS = {"inbound": inbound, "outbound": outbound, "release": release, "update": update, "reqs": reqs}


def run():
    """The step's output (a JSON value)."""
    out = {}
    if config["step"] == "setup":
        # Producer facility (s2uc prod-req): req PROD, the producer's Hello with its endpoints,
        # then update PROD with the endpoints the req reply carries (the producer relay's targets).
        p = side(prod, "PROD", config["prod_listeners"])
        prod.update(pb.UpdateTargets(uid=uid, remote_listeners=p["prod_listeners"], role="PROD"), metadata=md)
        # Consumer facility (s2uc outbound-request UID PROD_LISTENERS): req CONS, the consumer's
        # Hello (its reply says where the consumer application connects), then update CONS with
        # the producer facility's listeners.
        c = side(cons, "CONS")
        cons.update(pb.UpdateTargets(uid=uid, remote_listeners=p["listeners"], role="CONS"), metadata=md)
        out = {"producer": p, "consumer": c}
    elif config["step"] == "release":
        for name, control in (("producer", prod), ("consumer", cons)):
            control.release(pb.Release(uid=uid), metadata=md)
            out[name] = "OK"
    elif config["step"] == "actions":
        out = []
        for a in config["actions"]:
            if a["do"] == "appctrl":
                out.append(app(a))
            else:
                out.append(call(lambda: ACTIONS[a["do"]](a)))
    else:
        raise SystemExit("unknown step " + config["step"])
    return out


def finish(code):
    """Cancels calls still running (a Hello after its req was refused) here rather than in the
    collector, then exits without finalisers, for the reason given at FUTURES."""
    for f in FUTURES:
        f.cancel()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


try:
    print(json.dumps(run()))
except BaseException:  # a failed setup or release: the traceback says which call
    traceback.print_exc()
    finish(1)
finish(0)
