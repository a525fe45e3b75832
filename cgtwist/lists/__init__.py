"""The LIST module's pure logic: mailing lists as data, and what is done to their mail.

Owns the model of a list and its subscribers (``model``), the list's address forms and VERP
(``addresses``), signed tokens for confirmation, moderation and one-click unsubscribe
(``tokens``), the headers and body of a distributed copy (``headers``), mail commands to
``-request``/``-on``/``-off`` (``commands``), bounce attribution (``bounces``), digests
(``digest``) and CSV (``csvio``). No I/O and no Twisted: the store (cgtwist.storage.lists) keeps
lists, the LIST agent (cgtwist.delivery.listagent) acts, and both call down into this.
"""
