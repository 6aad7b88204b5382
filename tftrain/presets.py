"""Named variant lists for `grid.preset` (`launch.compare --preset=NAME`).

Data only, so `grid` can read it (a module built on `grid`, such as
`studies`, could not be imported by it). `chapter11` is the seed chapter's
CIFAR-10 exercise (Hands-On ML ch. 11, ex. 8) after batch norm; the comments
are the published validation accuracies.
"""

SELU = dict(activation='selu', kernel_initializer='lecun_normal',
            batch_norm='none', standardize=True)

# name -> [(variant name, Config overrides)]
PRESETS = {
    'chapter11': [
        ('no-bn_nadam-5e-5', dict(batch_norm='none', optimizer='nadam',
                                  learning_rate=5e-5)),            # 0.4762
        ('bn_nadam-5e-4', dict(batch_norm='before', optimizer='nadam',
                               learning_rate=5e-4)),               # 0.5398
        ('selu_nadam-7e-4', dict(SELU, optimizer='nadam',
                                 learning_rate=7e-4)),             # 0.4792
        ('selu_alpha-dropout-0.1', dict(SELU, optimizer='nadam',
                                        learning_rate=5e-4, dropout=0.1,
                                        mc_dropout_samples=10)),   # 0.4890
        ('selu_alpha-dropout_1cycle', dict(
            SELU, optimizer='momentum', learning_rate=0.05, dropout=0.1,
            schedule='onecycle', batch_size=128, epochs=15, patience=0,
            mc_dropout_samples=10)),                               # 0.5198
    ],
}
