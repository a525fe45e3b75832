"""cgtwist.spool"""
