# Runtime defaults shared by every experiment.
seed = 0
work_dir = None  # default: work_dirs/<config name>
oracle = dict(type='SimulatedOracle')
# report.html: learning curve, per round the picks, their scores and the answers' classes.
hooks = [dict(type='LearningCurveHook', metric='accuracy'), dict(type='RunReportHook'),
         # vis_data/scalars.json; TensorBoard too: ScalarsHook(vis_backends=[
         #     dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
         dict(type='ScalarsHook')]
