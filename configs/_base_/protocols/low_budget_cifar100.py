# Paper A.4 for CIFAR-100: 1,000 initial, 100 per round from a 10,000-sample subset.
_base_ = ['./low_budget.py']
al = dict(num_rounds=100, budget=100, subset_size=10000, initial_size=1000)
