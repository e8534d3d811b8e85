"""Replays the call sequences of SciStream 1.2.1's clients (s2uc, appctrl) with grpcio, an
implementation of gRPC we did not write, against the control endpoint (see PROTOCOL.md).

Usage: replay.py STUBS_DIR ADDR CERT_PEM SCENARIO_JSON. Prints one JSON object with what each
scenario observed; exits non-zero when a scenario does not behave as a 1.x client expects.
"""
import json
import sys
import time

stubs, addr, cert, config = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.path.insert(0, stubs)

import grpc  # noqa: E402
import scistream_pb2 as pb  # noqa: E402
import scistream_pb2_grpc as pbg  # noqa: E402

with open(cert, "rb") as f:
    creds = grpc.ssl_channel_credentials(root_certificates=f.read())
channel = grpc.secure_channel(addr, creds)
stub = pbg.ControlStub(channel)
token = config["token"]
md = [("authorization", token)]
out = {}


def code_of(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def inbound(uid, prod_listeners):
    """s2uc inbound-request: req PROD, 0.5 s later hello PROD on the same channel with the same
    token, at most 5 s for both, then update PROD with the req reply's prod_listeners."""
    req = stub.req.future(pb.Request(uid=uid, role="PROD", num_conn=5, rate=10000), metadata=md)
    time.sleep(0.5)
    hello = stub.hello.future(pb.Hello(uid=uid, prod_listeners=prod_listeners, role="PROD"), metadata=md)
    reply = req.result(timeout=5)
    hello_reply = hello.result(timeout=5)
    stub.update(pb.UpdateTargets(uid=uid, remote_listeners=list(reply.prod_listeners), role="PROD"), metadata=md)
    return {"listeners": list(reply.listeners), "prod_listeners": list(reply.prod_listeners),
            "hello_message": hello_reply.message}


def outbound(uid, prod_listeners):
    """s2uc outbound-request UID PROD_LISTENERS: req CONS, 0.5 s later hello with role PROD (the
    client's quirk), at most 5 s for the req reply, then update CONS with PROD_LISTENERS."""
    req = stub.req.future(pb.Request(uid=uid, role="CONS", num_conn=2, rate=10000), metadata=md)
    time.sleep(0.5)
    hello = stub.hello.future(pb.Hello(uid=uid, role="PROD"), metadata=md)  # kept: a dropped future cancels
    reply = req.result(timeout=5)
    hello.result(timeout=5)
    stub.update(pb.UpdateTargets(uid=uid, remote_listeners=prod_listeners.split(","), role="CONS"), metadata=md)
    return {"listeners": list(reply.listeners)}


def appctrl(uid, key, role, prod_listeners=()):
    """appctrl: hello; on any error but UNAUTHENTICATED retry 5 times 0.1 s apart."""
    for attempt in range(1, 7):
        try:
            r = stub.hello(pb.Hello(uid=uid, prod_listeners=list(prod_listeners), role=role),
                           metadata=[("authorization", key)])
            return {"result": "OK", "attempts": attempt, "message": r.message, "listeners": list(r.listeners)}
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                return {"result": "UNAUTHENTICATED", "attempts": attempt}
            last = e.code().name
            time.sleep(0.1)
    return {"result": last, "attempts": 6}


def prod_req(uid, key):
    """s2uc prod-req: req with no deadline until an application controller's Hello arrives,
    then update with the Hello's prod_listeners."""
    req = stub.req.future(pb.Request(uid=uid, role="PROD", num_conn=1, rate=10000), metadata=md)
    hello = None
    for _ in range(100):
        hello = appctrl(uid, key, "PROD", ["192.0.2.40:6000"])
        if hello["result"] == "OK":
            break
    reply = req.result(timeout=30)
    stub.update(pb.UpdateTargets(uid=uid, remote_listeners=list(reply.prod_listeners), role="PROD"), metadata=md)
    return {"hello": hello, "prod_listeners": list(reply.prod_listeners), "listeners": list(reply.listeners)}


scenarios = config["scenarios"]
if "inbound" in scenarios:
    out["inbound"] = inbound(config["uid_in"], ["192.0.2.30:7000", "192.0.2.31:7000"])
if "outbound" in scenarios:
    out["outbound"] = outbound(config["uid_out"], "198.51.100.70:5100,198.51.100.70:5101")
if "prod_req" in scenarios:
    out["prod_req"] = prod_req(config["uid_prod_req"], token)
if "appctrl" in scenarios:
    out["appctrl_unknown"] = appctrl(config["uid_unknown"], "k", "PROD", ["192.0.2.1:1"])
    out["appctrl_wrong_key"] = appctrl(config["uid_app"], "wrong-key", "CONS")
    out["appctrl_consumer"] = appctrl(config["uid_app"], config["app_key"], "CONS")
if "bad_token" in scenarios:
    out["bad_token"] = code_of(stub.req, pb.Request(uid=config["uid_unknown"], role="PROD"),
                               metadata=[("authorization", config["bad_token"])])
if "errors" in scenarios:
    out["errors"] = {
        "bad_role": code_of(stub.req, pb.Request(uid=config["uid_unknown"], role="BOTH"), metadata=md),
        "bad_uid": code_of(stub.req, pb.Request(uid="not-a-uuid", role="PROD"), metadata=md),
        "no_token": code_of(stub.req, pb.Request(uid=config["uid_unknown"], role="PROD")),
        "no_rights": code_of(stub.req, pb.Request(uid=config["uid_unknown"], role="PROD"),
                             metadata=[("authorization", config["bob"])]),
        "duplicate": code_of(stub.req, pb.Request(uid=config["uid_in"], role="PROD"), metadata=md),
        "bad_update": code_of(stub.update, pb.UpdateTargets(uid=config["uid_in"], remote_listeners=["x"], role="PROD"),
                              metadata=md),
        "release_unknown": code_of(stub.release, pb.Release(uid=config["uid_unknown"]), metadata=md),
        "too_big": code_of(stub.hello, pb.Hello(uid=config["uid_app"], prod_listeners=["a" * 70000]), metadata=md),
    }
if "inbound" in scenarios:
    out["release"] = code_of(stub.release, pb.Release(uid=config["uid_in"]), metadata=md)
print(json.dumps(out))
