# Paper A.4 (Fashion, SVHN, CIFAR-10): 20 class-balanced initial samples, then 100 rounds that
# each score a random 2,000-sample subset of the unlabeled pool and query 10.
al = dict(
    num_rounds=100,
    budget=10,
    subset_size=2000,
    initial_size=20,
    initial_set=dict(type='BalancedInitialSet'),
    schedule=dict(type='ScratchSchedule'))
