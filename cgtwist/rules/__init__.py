"""Rules: CommuniGate's Server, Domain and Account Rules as pure data, text and decisions.

Owns the rule model (``model``), its versioned text form (``text``), the facts a message
offers (``facts``) and the evaluator (``evaluate``); wildcard pictures are cgtwist.pictures. It
must not do I/O or import Twisted: the store keeps the text (cgtwist.storage.rules), and
cgtwist.core.rules runs the decisions for the queue and LOCAL delivery.
"""
