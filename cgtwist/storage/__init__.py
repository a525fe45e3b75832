"""cgtwist.storage"""
