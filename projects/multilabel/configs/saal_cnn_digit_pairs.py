# SAAL for multi-label classification: which digits appear on a canvas of two scikit-learn
# digits (embedded data, no download). The task adapter lives outside the package, in
# projects/multilabel/multilabel_task.py, and is registered by importing it:
custom_imports = dict(imports=['projects.multilabel.multilabel_task'],
                      allow_failed_imports=False)
_base_ = ['../../../configs/_base_/scorers/saal_sam.py',
          '../../../configs/_base_/default_runtime.py']

task = dict(
    type='MultiLabelDigitsTask',
    pool_size=1500,
    test_size=500,
    digits_per_image=2,
    model=dict(type='SmallCNN', width=32),
    optimizer=dict(type='Adam', lr=1e-3),
    epochs=40,
    batch_size=32)
# One unit per label: a canvas's score sums the perturbed losses of its ten labels, and its
# perturbation maximises their mean.
scorer = dict(engine=dict(chunk_size=100), score_reduction='sum', objective_reduction='mean',
              log_interval=250)
al = dict(
    num_rounds=10,
    budget=10,
    subset_size=500,
    initial_size=20,
    initial_set=dict(type='RandomInitialSet'),  # multi-hot labels have no classes to balance
    schedule=dict(type='ScratchSchedule'))
hooks = [dict(type='LearningCurveHook', metric='mAP')]
