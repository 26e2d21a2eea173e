"""A server cursor's getMores run in the session of the command that opened it (a real mongod
refuses a getMore from another session), also while other operations run between its batches;
the session and its client go back to the pool when the cursor is exhausted, closed or collected."""

import asyncio
import gc

from pymongo import monitoring


class Recorder(monitoring.CommandListener):
    def __init__(self):
        self.started_lsid = {}   # request_id -> lsid bytes
        self.find_cursor = {}    # cursor id opened by a find/aggregate -> lsid of that command
        self.getmores = []       # (cursor id, lsid)
        self.names = {}

    def started(self, event):
        lsid = event.command.get("lsid", {}).get("id")
        self.started_lsid[event.request_id] = bytes(lsid) if lsid is not None else None
        self.names[event.request_id] = event.command_name
        if event.command_name == "getMore":
            self.getmores.append((int(event.command["getMore"]), self.started_lsid[event.request_id]))

    def succeeded(self, event):
        if event.command_name in ("find", "aggregate"):
            cursor_id = event.reply.get("cursor", {}).get("id")
            if cursor_id:
                self.find_cursor[int(cursor_id)] = self.started_lsid[event.request_id]

    def failed(self, event):
        pass


async def test_getmores_share_the_opening_session(make_client, db_name, sync_client):
    sync_client[db_name]["items"].insert_many([{"_id": i} for i in range(60)])
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    coll = client[db_name]["items"]

    async def read_find():
        return [d["_id"] async for d in coll.find({}, batch_size=7).sort("_id", 1)]

    async def read_aggregate():
        cursor = await coll.aggregate([{"$sort": {"_id": 1}}], batchSize=9)
        return [d["_id"] async for d in cursor]

    async def noise():
        for i in range(40):
            assert await coll.find_one({"_id": i % 60}) == {"_id": i % 60}

    results = await asyncio.gather(read_find(), read_aggregate(), read_find(), noise(), noise())
    assert results[0] == results[1] == results[2] == list(range(60))
    assert len(rec.find_cursor) == 3
    assert rec.getmores, "the cursors needed getMores"
    for cursor_id, lsid in rec.getmores:
        assert lsid is not None
        assert lsid == rec.find_cursor[cursor_id], "a getMore left its cursor's session"
    # The three cursors lived at the same time: each had a session of its own.
    assert len(set(rec.find_cursor.values())) == 3
    assert client._core.stats()["sessions"] == 0


async def test_cursor_session_released_on_close_and_collection(make_client, db_name, sync_client):
    sync_client[db_name]["items"].insert_many([{"_id": i} for i in range(30)])
    client = make_client()
    coll = client[db_name]["items"]
    stats = client._core.stats

    cursor = coll.find({}, batch_size=5)
    assert (await cursor.next())["_id"] == 0
    assert stats()["sessions"] == 1
    await cursor.close()
    assert stats()["sessions"] == 0

    cursor = coll.find({}, batch_size=5)
    await cursor.next()
    assert stats()["sessions"] == 1
    del cursor
    gc.collect()
    await asyncio.sleep(0.2)  # the killCursors job sent from the collector runs
    assert stats()["sessions"] == 0

    # A result that fits in the first batch never holds a session.
    docs = await coll.find({}, batch_size=100).to_list(None)
    assert len(docs) == 30
    assert stats()["sessions"] == 0

    # An open cursor does not keep close() from finishing; its session is released with it.
    cursor = coll.find({}, batch_size=5)
    await cursor.next()
    await client.close()
    del cursor
    gc.collect()


def _idle_cursors(sync_client, db_name):
    ops = sync_client.admin.command("currentOp", idleCursors=True)["inprog"]
    return [op for op in ops if op.get("type") == "idleCursor" and op["ns"].startswith(db_name + ".")]


async def test_cursor_outliving_its_session_is_killed_when_collected(make_client, db_name,
                                                                     sync_client):
    """A cursor of an explicit session, read part way, the session ended, then the cursor dropped:
    the server cursor is killed (outside the ended session, as PyMongo does), not left open until
    the server times it out (found by the cancellation storm of tests/test_fault_cancel.py)."""
    sync_client[db_name]["items"].insert_many([{"_id": i} for i in range(300)])
    client = make_client()
    coll = client[db_name]["items"]
    async with client.start_session() as s:
        cursor = coll.find({}, batch_size=3, session=s)
        assert [d["_id"] for d in await cursor.to_list(5)] == [0, 1, 2, 3, 4]
    assert len(_idle_cursors(sync_client, db_name)) == 1
    del cursor
    gc.collect()
    for _ in range(50):
        if not _idle_cursors(sync_client, db_name):
            break
        await asyncio.sleep(0.1)
    assert _idle_cursors(sync_client, db_name) == []
