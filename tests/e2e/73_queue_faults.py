"""The waiting room through a Redis loss (issue 23): Redis restarted empty while users wait, before and after the
draw. Nobody moves back (a placed ticket carries its place), nobody is admitted twice (no place is handed out again:
later joiners come after the places reserved in MySQL), and joiners of a draw not yet held are back in it by their
next poll. It restarts Redis, so it runs with the outage scenarios (tests/run.sh: OUTAGES), on services of their
own."""
import time

import lib
from importlib import import_module

q = import_module("69_queue")
server, new_item, join_all, poll_all, place, join_ticket = (q.server, q.new_item, q.join_all, q.poll_all, q.place,
                                                            q.join_ticket)


def answers(s, tickets):
    """{user: answer} once every ticket answers 200 (a poll during the rebuild answers 503)"""
    users = list(tickets)

    def attempt():
        got = poll_all(s.port, [tickets[u] for u in users])
        return {u: r for u, (st, r) in zip(users, got)} if all(st == 200 for st, _ in got) else None
    return lib.wait_until(attempt, 90, interval=0.5, what="every ticket answered after the rebuild")


def test_redis_restarted_empty_while_users_wait():
    with server() as s:
        # item A: 20 in its draw, drawn, and 20 late joiners; at 1 a second most of them are still waiting
        a, a_start = new_item(s, 100, 1, starts_in_ms=1500)
        # item B: 10 in a draw that is still open when Redis loses everything (and stays open through the rebuild)
        b, b_start = new_item(s, 100, 1000, starts_in_ms=60000)
        drawn = ["d%02d" % i for i in range(20)]
        tickets = {u: r["ticket"] for u, r in join_all(s.port, a, drawn).items()}
        b_users = ["b%02d" % i for i in range(10)]
        b_tickets = {u: r["ticket"] for u, r in join_all(s.port, b, b_users).items()}
        # item C: 10 in a draw sealed at the start, and nobody joins after it
        c, c_start = new_item(s, 100, 1, starts_in_ms=1500)
        join_all(s.port, c, ["c%02d" % i for i in range(10)])
        time.sleep(max(0, a_start - time.time() * 1000) / 1000 + 0.05)
        late = ["l%02d" % i for i in range(20)]
        tickets.update({u: r["ticket"] for u, r in join_all(s.port, a, late).items()})
        # half the draw polls after the start (and holds its place in its ticket); the other half does not yet
        polled = {u: tickets[u] for u in drawn[:10] + late}
        before = answers(s, polled)
        for u, r in before.items():
            tickets[u] = r.get("ticket", tickets[u])
        # the task seals each draw at the start and copies it to MySQL
        copied = lib.wait_until(lambda: (lambda r: r if len(r) == 20 else None)(lib.mysql_query(
            "SELECT user_id, place FROM queue_draws WHERE item_id = '%s'" % a)), 30, what="item A's draw in MySQL")
        drawn_places = {u: int(p) for u, p in copied}
        assert sorted(drawn_places.values()) == list(range(20)), drawn_places
        assert all(place(tickets[u]) == drawn_places[u] for u in drawn[:10]), (tickets, drawn_places)
        lib.wait_until(lambda: len(lib.mysql_query("SELECT 1 FROM queue_draws WHERE item_id = '%s'" % c)) == 10, 30,
                       what="item C's draw sealed and in MySQL, though nobody polled")
        places = {u: drawn_places[u] for u in drawn}
        places.update({u: place(tickets[u]) for u in late})
        assert sorted(places.values()) == list(range(40)), places

        lib.services("redis-stop")
        lib.services("redis-start")  # empty: the harness runs redis without persistence

        # the pre-start tickets that never polled find their drawn place (MySQL's copy); everyone else their own
        after = answers(s, tickets)
        for u in drawn[10:]:
            assert place(after[u]["ticket"]) == drawn_places[u], (u, after[u], drawn_places[u])
            tickets[u] = after[u]["ticket"]
        for u in polled:
            if before[u]["state"] == "admitted":
                assert (after[u]["state"], after[u]["token"]) == ("admitted", before[u]["token"]), (u, before[u], after[u])
            else:
                assert after[u]["state"] in ("waiting", "admitted"), after[u]
                if after[u]["state"] == "waiting":
                    assert after[u]["position"] <= before[u]["position"], (u, before[u], after[u])
        # joining again gives the same places; newcomers come after every place handed out before the loss
        again = join_all(s.port, a, drawn + late, again=True)
        assert {u: place(again[u]["ticket"]) for u in tickets} == places
        newcomers = [place(join_ticket(s, a, "n%d" % i)) for i in range(5)]
        assert min(newcomers) >= 40 and len(set(newcomers)) == 5 and newcomers == sorted(newcomers), newcomers
        print("     after the loss the next place is %d (the reservation in MySQL: %s)" % (
            newcomers[0], lib.mysql_query("SELECT queue_ceiling FROM items WHERE item_id = '%s'" % a)))

        # item C: its sealed draw's places were reserved in MySQL before anyone held one: a newcomer comes after them
        assert place(join_ticket(s, c, "c-new")) >= 10

        # item B's draw was lost before its start: its joiners' polls (before the start) put them back in it
        status = answers(s, b_tickets)
        assert time.time() * 1000 < b_start, "the rebuild outlasted item B's open draw: raise its start"
        assert all(r["state"] == "waiting" for r in status.values()), status
        assert int(lib.redis_cli("ZCARD", "seckill:{%s}:queue:%s:draw" % (b, b_tickets["b00"].split("~")[3]))) == 10
        time.sleep(max(0, b_start - time.time() * 1000) / 1000 + 0.05)
        placed = answers(s, b_tickets)
        assert sorted(place(r["ticket"]) for r in placed.values()) == list(range(10)), placed


if __name__ == "__main__":
    lib.main(globals())
