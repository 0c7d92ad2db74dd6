"""``qwenvl-train convert``: data in the formats people already have, written as the original conversations
format (JSON Lines) that ``check-data`` and ``train`` read.

One module per source format (:mod:`.llava`, :mod:`.sharegpt`, ...), each an ``items(source, job)`` reader of its
records and a ``convert(item, job)`` of one record into samples; :mod:`.common` holds what they share (images,
boxes through :mod:`qwenvl_train.format.boxes`, markup through :mod:`qwenvl_train.format.markup`, problems, the
writer) and :mod:`.formats` the list of formats (the command line is :mod:`qwenvl_train.commands.convert`).
Adding a format: a module with those two functions and one line in :data:`.formats.FORMATS`.
"""
