"""cgtwist.core"""
