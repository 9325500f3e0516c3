"""The waiting room (issue 23, API-v1.2.md "Waiting room", invariant 8): places drawn at random at the start and in
join order after it, an admission rate that holds across two processes, the pass as the purchase token, every
refusal of the contract, sold out while thousands wait, and a restart of seckilld while users wait. Asserts the
places the tickets carry, the admission times the server answers, and counts in Redis and MySQL.

A ticket is "q1~<d|p>~<place>~<armed_at>~<item>~<user>~<mac>" (scripts/admission/queue.lua): the tests read the place
from it, the way a client would read the position."""
import json
import os
import random
import signal
import time
import uuid

import lib

SALE_CONF = os.path.join(lib.SCRIPTS, "sale.conf")
SHIPPED = os.path.join(lib.ROOT, "scripts")
TOKEN = {"Authorization": "Bearer test-token"}
SECRET = "queue-secret-of-the-tests-012345"


def server(workers=2, **kw):
    return lib.Server(SHIPPED, workers=workers, conf=SALE_CONF, env={"SECKILLD_TOKEN_SECRET": SECRET},
                      wait_healthy=True, **kw)


def new_item(s, stock, rate, pass_ttl_s=60, starts_in_ms=None, prefix="q-", **extra):
    item = prefix + uuid.uuid4().hex[:10]
    body = dict(stock=stock, limit_per_user=1, waiting_room={"admit_per_s": rate, "pass_ttl_s": pass_ttl_s}, **extra)
    if starts_in_ms is not None:
        body["starts_at"] = int(time.time() * 1000) + starts_in_ms
    status, r = s.json("PUT", "/admin/items/" + item, body, TOKEN)
    assert status == 200, (status, r)
    assert r["item"]["waiting_room"] == {"admit_per_s": rate, "pass_ttl_s": pass_ttl_s}, r
    return item, body.get("starts_at")


def place(ticket):
    kind, value = ticket.split("~")[1:3]
    return int(value) if kind == "p" else None


def join_all(port, item, users, concurrency=16, again=False):
    """{user: join answer}; every join must be 200, and a first join waiting (joining again answers where the user
    stands: admitted, perhaps)"""
    reqs = [("POST", "/queue/join", {"item_id": item, "user_id": u}, None) for u in users]
    out = {}
    for u, (st, body, _) in zip(users, lib.run_concurrently(port, reqs, concurrency=concurrency, timeout=60)):
        r = json.loads(body)
        assert st == 200 and r["ok"] and "ticket" in r, (u, st, r)
        assert (r["state"] == "waiting" and r["position"] >= 1) or (again and r["state"] == "admitted"), (u, r)
        out[u] = r
    return out


def poll_all(port, tickets, concurrency=16):
    """[(status, answer)] of GET /queue/status for each ticket, in order"""
    reqs = [("GET", "/queue/status?ticket=" + t, None, None) for t in tickets]
    return [(st, json.loads(body)) for st, body, _ in lib.run_concurrently(port, reqs, concurrency, timeout=60)]


def spearman(xs, ys):
    n = len(xs)
    rx = {v: i for i, v in enumerate(sorted(xs))}
    ry = {v: i for i, v in enumerate(sorted(ys))}
    d2 = sum((rx[x] - ry[y]) ** 2 for x, y in zip(xs, ys))
    return 1 - 6 * d2 / (n * (n * n - 1))


def sold(item):
    return int(lib.redis_cli("GET", "seckill:{%s}:sold" % item) or 0)


def test_places_are_drawn_at_random_before_the_start_and_in_join_order_after_it():
    n_pre, n_late = 20000, 5000
    with server() as s:
        # how long 500 joins take here (the ASan build is slower): the start leaves three times that for 20,000
        probe, _ = new_item(s, 10, 100000)
        t = time.monotonic()
        join_all(s.port, probe, ["p%d" % i for i in range(500)])
        lead_ms = int((time.monotonic() - t) * 1000 * (n_pre / 500) * 3) + 3000
        item, starts_at = new_item(s, 10, 100000, starts_in_ms=lead_ms)
        users = ["u%05d" % i for i in range(n_pre)]  # joined in this order
        joined = join_all(s.port, item, users)
        assert int(time.time() * 1000) < starts_at, "the pre-start joins outlasted the start: raise the lead"
        assert all(place(r["ticket"]) is None for r in joined.values()), "a pre-start ticket carries a place"
        # joining again is the same place (the same ticket)
        again = join_all(s.port, item, users[:200], again=True)
        assert all(again[u]["ticket"] == joined[u]["ticket"] for u in users[:200])
        time.sleep(max(0, starts_at - time.time() * 1000) / 1000 + 0.05)

        # after the start: the first poll answers the drawn place in a new ticket
        answers = poll_all(s.port, [joined[u]["ticket"] for u in users])
        places = []
        for u, (st, r) in zip(users, answers):
            assert st == 200 and r["state"] in ("waiting", "admitted") and "ticket" in r, (u, st, r)
            places.append(place(r["ticket"]))
        assert sorted(places) == list(range(n_pre)), "the draw is not a permutation of 0..n-1: a user holds two places"
        rho = spearman(list(range(n_pre)), places)
        print("     Spearman rho of join order and drawn place over %d users: %.4f" % (n_pre, rho))
        assert abs(rho) < 0.05, rho
        # the draw is kept in MySQL for a Redis loss (admission/queue.lua's task): the same places
        kept = lib.wait_until(lambda: (lambda r: r if len(r) == n_pre else None)(lib.mysql_query(
            "SELECT user_id, place FROM queue_draws WHERE item_id = '%s'" % item)), 60, what="the draw in MySQL")
        kept = {u: int(p) for u, p in kept}
        assert all(kept[u] == p for u, p in zip(users, places)), "MySQL's copy of the draw differs"
        # polling again with the old ticket answers the same place
        for u, (st, r) in zip(users[:100], poll_all(s.port, [joined[u]["ticket"] for u in users[:100]])):
            assert place(r["ticket"]) == places[users.index(u)], (u, r)

        # after the start, first come first served: 5,000 joins one after the other
        late = ["l%05d" % i for i in range(n_late)]
        late_tickets = []
        for u in late:
            st, r = s.json("POST", "/queue/join", {"item_id": item, "user_id": u})
            assert st == 200 and r["state"] == "waiting", (st, r)
            late_tickets.append(r["ticket"])
        late_places = [place(t) for t in late_tickets]
        assert late_places == sorted(late_places) and len(set(late_places)) == n_late, "late joiners out of order"
        assert late_places[0] >= n_pre, late_places[:5]
        # and they are admitted in that order: admission times never go backwards along the join order
        lib.wait_until(lambda: s.json("GET", "/queue/status?ticket=" + late_tickets[-1])[1]["state"] == "admitted",
                       30, what="the last late joiner admitted")
        admitted = [r for _, r in poll_all(s.port, late_tickets)]
        assert all(r["state"] == "admitted" for r in admitted), [r for r in admitted if r["state"] != "admitted"][:3]
        times = [r["admitted_at"] for r in admitted]
        assert times == sorted(times), "late joiners admitted out of join order"


def join_ticket(s, item, user):
    st, r = s.json("POST", "/queue/join", {"item_id": item, "user_id": user})
    assert st == 200, (st, r)
    return r["ticket"]


def test_admission_rate_holds_across_two_processes():
    rate, seconds = 200, 30
    n = rate * seconds
    lead_ms = 15000 if lib.sanitized() else 8000
    with server() as a, server() as b:
        item, starts_at = new_item(a, n, rate, pass_ttl_s=120, starts_in_ms=lead_ms)
        users = ["r%05d" % i for i in range(n)]
        pre, late = users[: n // 2], users[n // 2:]
        tickets = {}
        for srv, part in ((a, pre[0::2]), (b, pre[1::2])):
            tickets.update({u: r["ticket"] for u, r in join_all(srv.port, item, part).items()})
        assert int(time.time() * 1000) < starts_at, "the pre-start joins outlasted the start"
        time.sleep(max(0, starts_at - time.time() * 1000) / 1000 + 0.05)
        for srv, part in ((a, late[0::2]), (b, late[1::2])):
            tickets.update({u: r["ticket"] for u, r in join_all(srv.port, item, part).items()})

        # while the room empties: a sample polled through both processes each second; positions only go down, and
        # an admitted user's admission (time and pass) is the same in both
        last = {}
        sample = random.Random(7).sample(users, 100)
        end = starts_at + seconds * 1000 + 1000
        while time.time() * 1000 < end:  # (the sample's positions, through the admissions)
            for srv in (a, b):
                for u, (st, r) in zip(sample, poll_all(srv.port, [tickets[u] for u in sample])):
                    assert st == 200, (st, r)
                    if "ticket" in r:
                        tickets[u] = r["ticket"]
                    if r["state"] == "waiting":
                        assert r["position"] <= last.get(u, (10 ** 9,))[0], (u, r, last.get(u))
                        last[u] = (r["position"],)
                    else:
                        assert r["state"] == "admitted", r
                        seen = last.get(u)
                        assert seen is None or len(seen) == 1 or seen == (r["admitted_at"], r["token"]), (u, r, seen)
                        last[u] = (r["admitted_at"], r["token"])
            time.sleep(0.5)

        # every place admitted once, from both processes alike; never more than `rate` in any 1000 ms. A late join
        # that came after the clock passed the counter (a slow machine) took a later place: wait for the last one.
        last_place = max(place(tickets[u]) or 0 for u in late)
        lib.wait_until(lambda: time.time() * 1000 > starts_at + (last_place + 1) * 1000 // rate + 200, 120,
                       interval=0.2, what="the last place's admission")
        final = {}
        for srv, part in ((a, users[0::2]), (b, users[1::2])):
            for u, (st, r) in zip(part, poll_all(srv.port, [tickets[u] for u in part])):
                assert st == 200 and r["state"] == "admitted", (u, st, r)
                final[u] = r
        for i, u in enumerate(users[:500]):  # final asked a for the even ones, b for the odd ones: now the other
            st, r = (b if i % 2 == 0 else a).json("GET", "/queue/status?ticket=" + tickets[u])
            assert (r["admitted_at"], r["token"], r["expires_at"]) == (
                final[u]["admitted_at"], final[u]["token"], final[u]["expires_at"]), (u, r, final[u])
        places = sorted(place(final[u].get("ticket") or tickets[u]) for u in users)
        assert len(set(places)) == n, "a place was handed out twice"
        assert places[: n // 2] == list(range(n // 2)), "the draw's places are not 0..n-1"
        times = sorted(r["admitted_at"] for r in final.values())
        assert times[0] >= starts_at, (times[0], starts_at)
        for i in range(len(times) - rate):
            assert times[i + rate] - times[i] >= 1000, "more than %d admitted within 1000 ms from %d" % (rate, times[i])
        per_second = {}
        for t in times:
            per_second[(t - starts_at) // 1000] = per_second.get((t - starts_at) // 1000, 0) + 1
        print("     %d admitted over %d s, at most %d in a second" % (len(times), len(per_second),
                                                                        max(per_second.values())))
        assert max(per_second.values()) <= rate
        # a pass works in the other process, once
        u = users[0]
        other = b  # users[0] joined through a
        st, r = other.json("POST", "/seckill/add", {"item_id": item, "user_id": u, "token": final[u]["token"]})
        assert st == 200, (st, r)
        st, r = other.json("POST", "/seckill/add", {"item_id": item, "user_id": u, "token": final[u]["token"]})
        assert (st, r["error"]) == (409, "limit_exceeded"), (st, r)
        assert sold(item) == 1


def test_refusals_of_the_contract():
    with server() as s:
        item, _ = new_item(s, 5, 1000)
        other, _ = new_item(s, 5, 1000)
        plain = "plain-" + uuid.uuid4().hex[:8]
        assert s.json("PUT", "/admin/items/" + plain, {"stock": 5}, TOKEN)[0] == 200
        ended = "ended-" + uuid.uuid4().hex[:8]
        now = int(time.time() * 1000)
        assert s.json("PUT", "/admin/items/" + ended, {"stock": 5, "starts_at": now - 5000, "ends_at": now - 1000,
                                                       "waiting_room": {"admit_per_s": 5, "pass_ttl_s": 30}},
                      TOKEN)[0] == 200

        # the item's settings: out-of-range rates and pass lifetimes are refused
        for room in ({"admit_per_s": 0, "pass_ttl_s": 30}, {"admit_per_s": 100001, "pass_ttl_s": 30},
                     {"admit_per_s": 5, "pass_ttl_s": 9}, {"admit_per_s": 5, "pass_ttl_s": 3601}, "fast"):
            st, r = s.json("PUT", "/admin/items/bad-" + uuid.uuid4().hex[:6], {"stock": 1, "waiting_room": room},
                           TOKEN)
            assert (st, r["error"]) == (400, "bad_request"), (room, st, r)

        def join(body):
            st, r = s.json("POST", "/queue/join", body)
            return st, r.get("error")
        assert join({"item_id": "nope-" + uuid.uuid4().hex[:6], "user_id": "u1"}) == (404, "unknown_item")
        assert join({"item_id": plain, "user_id": "u1"}) == (409, "no_waiting_room")
        assert join({"item_id": ended, "user_id": "u1"}) == (403, "ended")
        assert join({"item_id": item, "user_id": "bad user"}) == (400, "bad_request")
        assert join({"item_id": item}) == (400, "bad_request")
        assert s.request("POST", "/queue/join", b"{not json", {"Content-Type": "application/json"})[0] == 400

        # the pass is the only way in: no token, the token route, a token of a plain /seckill/token
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "u1"})
        assert (st, r["error"]) == (403, "bad_token"), (st, r)
        st, r = s.json("POST", "/seckill/token", {"item_id": item, "user_id": "u1"})
        assert (st, r["error"]) == (403, "queue_required"), (st, r)

        mine = join_ticket(s, item, "u1")
        theirs = join_ticket(s, item, "u2")
        elsewhere = join_ticket(s, other, "u1")
        parts = mine.split("~")

        def status(query):
            st, r = s.json("GET", "/queue/status?" + query)
            return st, r.get("error")
        forged = [
            mine[:-1] + ("0" if mine[-1] != "0" else "1"),   # one hex digit of the MAC
            mine[: len(mine) // 2],                           # truncated
            "~".join(parts[:2] + [str(int(parts[2]) - 1)] + parts[3:]),  # a better place
            "~".join(parts[:5] + ["u2"] + parts[6:]),         # another user's name on my MAC
            "~".join(parts[:4] + [other] + parts[5:]),        # another item's name on my MAC
            "q1~p~0~1~" + item + "~u1~" + "0" * 64,
            "x" * 5000,
        ]
        for t in forged:
            assert status("ticket=" + t) == (403, "bad_ticket"), t
        # a genuine ticket of another user, or of another item, presented as mine / for this item
        assert status("ticket=%s&user_id=u1" % theirs) == (403, "bad_ticket")
        assert status("ticket=%s&item_id=%s" % (elsewhere, item)) == (403, "bad_ticket")
        assert status("ticket=%s&item_id=%s&user_id=u1" % (mine, item))[0] == 200
        assert status("nothing=1") == (400, "bad_request")
        # a ticket of an earlier set-up of the item is no good after the item is set up again
        assert s.json("PUT", "/admin/items/" + other, {"stock": 5, "waiting_room": {"admit_per_s": 1000,
                                                                                    "pass_ttl_s": 60}}, TOKEN)[0] == 200
        assert status("ticket=" + elsewhere) == (403, "bad_ticket")

        # admitted: the pass buys once, for its user only
        r = lib.wait_until(lambda: (lambda a: a if a["state"] == "admitted" else None)(
            s.json("GET", "/queue/status?ticket=" + mine)[1]), 10, what="u1 admitted")
        assert r["expires_at"] - r["admitted_at"] == 60000, r
        st, b = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "u2", "token": r["token"]})
        assert (st, b["error"]) == (403, "bad_token"), (st, b)
        st, b = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "u1", "token": r["token"]})
        assert st == 200, (st, b)
        assert sold(item) == 1
        view = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
        assert view["admit_per_s"] == 1000 and view["admitted"] == 2 and view["waiting"] == 0, view


def test_a_pass_that_lapses_unused_answers_expired_and_takes_no_later_second():
    with server() as s:
        item, _ = new_item(s, 10, 1, pass_ttl_s=10)
        tickets = [join_ticket(s, item, "e%d" % i) for i in range(3)]
        first = lib.wait_until(lambda: (lambda a: a if a["state"] == "admitted" else None)(
            s.json("GET", "/queue/status?ticket=" + tickets[0])[1]), 10, what="the first admitted")
        # the next places are admitted one second apart whatever the first does
        second = lib.wait_until(lambda: (lambda a: a if a["state"] == "admitted" else None)(
            s.json("GET", "/queue/status?ticket=" + tickets[1])[1]), 10, what="the second admitted")
        assert second["admitted_at"] - first["admitted_at"] == 1000, (first, second)
        st, b = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "e1", "token": second["token"]})
        assert st == 200, (st, b)
        lib.wait_until(lambda: s.json("GET", "/queue/status?ticket=" + tickets[0])[1]["state"] == "expired", 30,
                       what="the unused pass to lapse")
        lib.wait_until(lambda: time.time() * 1000 > second["expires_at"] + 100, 30, what="the used pass's end")
        # the user who bought is not told their pass lapsed unused
        assert s.json("GET", "/queue/status?ticket=" + tickets[1])[1]["state"] == "admitted"
        st, b = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "e0", "token": first["token"]})
        assert (st, b["error"]) == (403, "bad_token"), (st, b)


def test_sold_out_while_10000_wait():
    n = 10000
    with server() as s:
        item, _ = new_item(s, 3, 2, pass_ttl_s=3600)  # the first passes outlast 10,003 joins on a slow machine
        users = ["s%05d" % i for i in range(n + 3)]
        tickets = {u: r["ticket"] for u, r in join_all(s.port, item, users).items()}
        # the first three are admitted within ~2 s at 2 a second; they buy the whole stock
        for u in users[:3]:
            r = lib.wait_until(lambda: (lambda a: a if a["state"] == "admitted" else None)(
                s.json("GET", "/queue/status?ticket=" + tickets[u])[1]), 15, what=u + " admitted")
            st, b = s.json("POST", "/seckill/add", {"item_id": item, "user_id": u, "token": r["token"]})
            assert st == 200, (st, b)
        assert sold(item) == 3
        answers = poll_all(s.port, [tickets[u] for u in users[3:]])
        assert all(st == 200 and r == {"ok": True, "state": "sold_out"} for st, r in answers), \
            [a for a in answers if a[1].get("state") != "sold_out"][:3]
        st, r = s.json("POST", "/queue/join", {"item_id": item, "user_id": "late"})
        assert (st, r["error"]) == (409, "sold_out"), (st, r)


def test_a_restart_of_seckilld_moves_nobody_back():
    with server() as s:
        item, starts_at = new_item(s, 100, 1, starts_in_ms=1500)
        users = ["w%03d" % i for i in range(60)]
        tickets = {u: r["ticket"] for u, r in join_all(s.port, item, users[:30]).items()}
        time.sleep(max(0, starts_at - time.time() * 1000) / 1000 + 0.05)
        tickets.update({u: r["ticket"] for u, r in join_all(s.port, item, users[30:]).items()})
        before = {}
        for u, (st, r) in zip(users, poll_all(s.port, [tickets[u] for u in users])):
            assert st == 200, r
            tickets[u] = r.get("ticket", tickets[u])
            before[u] = r
        s.stop()
        s.start(wait_healthy=True)
        for u, (st, r) in zip(users, poll_all(s.port, [tickets[u] for u in users])):
            assert st == 200, r
            if before[u]["state"] == "admitted":
                assert (r["state"], r["token"]) == ("admitted", before[u]["token"]), (u, before[u], r)
            elif r["state"] == "waiting":
                assert r["position"] <= before[u]["position"], (u, before[u], r)
        # joining again after the restart gives the same places; a newcomer comes after everyone
        again = join_all(s.port, item, users, again=True)
        assert all(place(again[u]["ticket"]) == place(tickets[u]) for u in users)
        assert place(join_ticket(s, item, "newcomer")) == 60


if __name__ == "__main__":
    lib.main(globals())
