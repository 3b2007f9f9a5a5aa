# ruff: noqa  (third-party code kept verbatim: not linted)
# Copied verbatim from hkust-nlp/deita (https://github.com/hkust-nlp/deita), commit
# b279f2c329b403d2612a61e270c8d2a2eeaed6f4, file src/deita/selection/filter/combined_filter.py.
# Licensed under the Apache License, Version 2.0 (see LICENSE in this folder); copyright the DEITA authors.
# Changed: the two import lines point at the copies in this folder.
# Used only by evals/bench_admission.py to time and check curate's admission loop against DEITA's own code;
# it is not part of the curate package.
import torch
import logging
import numpy as np
from evals.deita_reference.base import IterativeFilter
from evals.deita_reference.pipeline_utils import sort_key_split

logger = logging.getLogger(__name__)

class Combined_Filter(IterativeFilter):
    
    def __init__(self, **kwargs):
        
        super().__init__(**kwargs)
        
    def _sort(self, df):
        
        """        
            Sort dataframe by given method
        """

        if isinstance(self.sort_key, list):
            all_sort_keys = self.sort_key
        else:
            all_sort_keys = sort_key_split(self.sort_key)
            
        logger.info("Compute final score for each sample, consider {}".format("+".join(all_sort_keys)))
        for sk in all_sort_keys:
            df[sk] = df[sk].apply(np.array)
        
        df["final_score"] = df[all_sort_keys[0]]
        for i in range(1, len(all_sort_keys)):
            df["final_score"] = df["final_score"] * df[all_sort_keys[i]]
            
        df["final_score"] = df["final_score"].apply(lambda x: x.sum())
        df_sorted = df.sort_values(by = "final_score", ascending = False)
        
        return df_sorted
        
        