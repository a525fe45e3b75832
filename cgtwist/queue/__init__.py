"""cgtwist.queue"""
