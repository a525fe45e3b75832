"""cgtwist.protocols"""
