# The strategies of the paper's Table 1 (and least confidence / margin), each a partial config
# merged into a sweep's protocol by tools/benchmark_al.py: `scorer`, `selector`, optionally
# `hooks` (appended to the run's hooks) and `task` (merged into the task config).
# LL4AL's feature_layers name ResNet-18's stages; configs with another model override them.
strategies = dict(
    saal=dict(
        scorer=dict(type='SharpnessScorer',
                    perturbation=dict(type='SAMPerturbation', rho=0.05, q=2),
                    engine=dict(type='VectorizedEngine', chunk_size=32), mode='max'),
        selector=dict(type='TopKSelector')),
    saal_kmeanspp=dict(
        scorer=dict(type='SharpnessScorer',
                    perturbation=dict(type='SAMPerturbation', rho=0.05, q=2),
                    engine=dict(type='VectorizedEngine', chunk_size=32), mode='max'),
        selector=dict(type='ScoreKMeansPPSelector')),
    random=dict(scorer=dict(type='RandomScorer'), selector=dict(type='TopKSelector')),
    entropy=dict(scorer=dict(type='EntropyScorer'), selector=dict(type='TopKSelector')),
    least_confidence=dict(scorer=dict(type='LeastConfidenceScorer'),
                          selector=dict(type='TopKSelector')),
    margin=dict(scorer=dict(type='MarginScorer'), selector=dict(type='TopKSelector')),
    # Diversity-only selectors ignore the scores; RandomScorer is the cheapest placeholder.
    coreset=dict(scorer=dict(type='RandomScorer'),
                 selector=dict(type='KCenterGreedySelector')),
    badge=dict(scorer=dict(type='GradientNormScorer'), selector=dict(type='BADGESelector')),
    ll4al=dict(
        scorer=dict(type='LossPredictionScorer'), selector=dict(type='TopKSelector'),
        task=dict(train_extensions=[
            dict(type='LossPredictionExtension',
                 feature_layers=['layer1', 'layer2', 'layer3', 'layer4'])])),
    vaal=dict(scorer=dict(type='VAALScorer', vae=dict(type='ConvVAE'), iterations=1000),
              selector=dict(type='TopKSelector')),
    # No self-supervised encoder ships here: ProbCover embeds with the current model's
    # features (ModelFeatures). Set selector.embedding=dict(type='PrecomputedEmbedding',
    # path=...) to use SimCLR features computed offline, as the paper does.
    probcover=dict(scorer=dict(type='RandomScorer'),
                   selector=dict(type='ProbCoverSelector', num_clusters=10)),
)

# Defaults of tools/benchmark_al.py: every strategy, both optimizers, names for the report.
sweep = dict(
    strategies=['saal', 'saal_kmeanspp', 'random', 'entropy', 'least_confidence', 'margin',
                'coreset', 'badge', 'll4al', 'vaal', 'probcover'],
    optimizers=['adam', 'sam'],
    seeds=[0, 1, 2, 3, 4],
    metric='accuracy',
    labels=dict(saal='SAAL', saal_kmeanspp='SAAL w/ k-means++', random='Random',
                entropy='Entropy', least_confidence='Least confidence', margin='Margin',
                coreset='Coreset', badge='BADGE', ll4al='LL4AL', vaal='VAAL',
                probcover='ProbCover', adam='Adam', sam='SAM'))
