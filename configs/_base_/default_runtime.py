# Runtime defaults shared by every experiment.
seed = 0
work_dir = None  # default: work_dirs/<config name>
oracle = dict(type='SimulatedOracle')
hooks = [dict(type='LearningCurveHook', metric='accuracy')]
