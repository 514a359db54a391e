"""Run the data stages on a Ray cluster (``--ray [ADDRESS]``, the optional extra ``p2m[ray]``).

One module per stage (``synth``, ``shard``, ``detect``, ``fit``, ``crawl``); each calls its stage's own work
unit (a batch, a subject, a chunk of people, a set of hosts) in Ray workers and lets the stage write the files,
so a Ray run writes the same files as a local one. Nothing here is imported unless ``--ray`` is given, and Ray
itself is imported only by :func:`p2m.scale.common.init` and what runs after it.
"""
