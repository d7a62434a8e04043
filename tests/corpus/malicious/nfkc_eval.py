# attack: fullwidth eval normalised by NFKC
# expect: static.confusable-identifier
def f(n):
    return ｅval("1+1")
