"""The paper's ablation (Table 8): training variants × seeds → train → evaluate → a report with an evidence gate."""
