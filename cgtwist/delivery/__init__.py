"""cgtwist.delivery"""
