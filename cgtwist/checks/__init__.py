"""cgtwist.checks"""
