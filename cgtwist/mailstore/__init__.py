"""cgtwist.mailstore"""
