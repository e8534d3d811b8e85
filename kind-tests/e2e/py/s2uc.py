"""SciStream 1.x's clients across two facilities, with grpcio (an implementation of gRPC we
did not write): what `s2uc prod-req` / `s2uc outbound-request` and the application
controllers (`appctrl`) send, against each facility's control endpoint (see PROTOCOL.md).

Usage: s2uc.py STUBS_DIR CONFIG_JSON, where CONFIG_JSON has
  step:           "setup" or "release"
  producer, consumer: {"addr": "127.0.0.1:PORT", "cert": PEM_FILE} of each control endpoint
  token:          the user's bearer token (metadata `authorization`, bare, as 1.x sends it)
  uid:            the stream's uid (the same on both sides, as in 1.x)
  num_conn, rate: as `s2uc` sends them (rate in kb/s)
  prod_listeners: the producer application's endpoints (step setup)

Prints one JSON object with the replies; exits non-zero when a call fails.
"""
import json
import sys
import time

stubs, config = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, stubs)

import grpc  # noqa: E402
import scistream_pb2 as pb  # noqa: E402
import scistream_pb2_grpc as pbg  # noqa: E402


def stub(endpoint):
    with open(endpoint["cert"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return pbg.ControlStub(grpc.secure_channel(endpoint["addr"], creds))


prod, cons = stub(config["producer"]), stub(config["consumer"])
uid, token = config["uid"], config["token"]
md = [("authorization", token)]
# Bound of every wait (generous: a loaded machine); 1.x's own req waits up to 180 s.
WAIT = 120


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
    req = control.req.future(pb.Request(uid=uid, role=role, num_conn=config["num_conn"], rate=config["rate"]),
                             metadata=md)
    hello = appctrl(control, role, prod_listeners)
    reply = req.result(timeout=WAIT)
    return {"listeners": list(reply.listeners), "prod_listeners": list(reply.prod_listeners), "hello": hello}


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
else:
    sys.exit("unknown step " + config["step"])
print(json.dumps(out))
