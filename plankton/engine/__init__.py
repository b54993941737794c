"""The Redis engine: the Lua transitions and their Python face, RQ as transport, the results
channel, connections, and the metric counters the scripts keep.

Everything a task's life touches in Redis goes through here; the key names it uses live in
``plankton.keys``, shared with every other room.
"""
